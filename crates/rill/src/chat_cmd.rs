//! `rill chat`: a terminal chat with a bot of a rill server, interactive or one-shot (a message
//! in, exactly the answer's text out, for shell pipelines). Answers stream as they are generated
//! and resume by themselves after a dropped connection (`rill_client::ChatsClient::send`).
//!
//! Standard output carries the answer's text and nothing else. The model's reasoning streams to
//! standard error (dimmed on a terminal), and each tool call is one line there, with its
//! arguments and result; sources too. `--json` prints every event instead, one JSON object per
//! line.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{Context, bail};
use clap::Args;
use rill_client::{
    ChatEvent, ChatUpdate, ChatsClient, DeltaKind, Error, MessageStatus, Part, Role,
};
use tokio::sync::mpsc;

use crate::sub_cmd::ServerArgs;

/// The bot a new chat talks to when `--bot` is not given (if the server offers it).
const DEFAULT_BOT: &str = "demo";

/// How many past messages are shown when an interactive session continues a chat.
const HISTORY_SHOWN: u32 = 10;

/// Flags of `rill chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// The bot of a new chat [default: `demo` if the server has it, else its first bot].
    #[arg(long, value_name = "BOT")]
    bot: Option<String>,

    /// Continue this chat instead of starting one (its id is printed at the start of a session).
    #[arg(long, value_name = "ID")]
    chat: Option<String>,

    /// Send this one message, print exactly the answer's text and exit (`-`: read the message
    /// from standard input, as when standard input is not a terminal). Without it, and with a
    /// terminal on standard input: an interactive session.
    #[arg(value_name = "MESSAGE")]
    message: Option<String>,

    /// Print every event of the answer as one JSON object per line (`{"event","data"}`)
    /// instead of its text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn main(args: ChatArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: ChatArgs) -> anyhow::Result<()> {
    // Read a piped message before any network call, so a bad pipe fails fast.
    let one_shot = match args.message.as_deref() {
        Some("-") => Some(read_stdin()?),
        Some(message) => Some(message.to_owned()),
        None if !std::io::stdin().is_terminal() => Some(read_stdin()?),
        None => None,
    };
    if one_shot.as_deref().is_some_and(|m| m.trim().is_empty()) {
        bail!("the message is empty");
    }
    let chats = args.server.client()?.chats();
    let interactive = one_shot.is_none();
    let chat = open_chat(
        &chats,
        args.bot.as_deref(),
        args.chat.as_deref(),
        interactive,
    )
    .await?;
    match one_shot {
        Some(message) => {
            // On stderr, so stdout carries the answer alone.
            eprintln!("rill: chat {chat} (continue it with --chat {chat})");
            one_shot_answer(&chats, &chat, &message, args.json).await
        }
        None => interactive_session(&chats, &chat, args.json).await,
    }
}

/// Standard input as the message, without the line end a shell or `echo` adds.
fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the message from standard input")?;
    let trimmed = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(trimmed);
    Ok(text)
}

/// The chat to talk in: `--chat` (checked to exist), else a new one with `--bot` or the default.
async fn open_chat(
    chats: &ChatsClient,
    bot: Option<&str>,
    chat: Option<&str>,
    interactive: bool,
) -> anyhow::Result<String> {
    if let Some(id) = chat {
        let chat = chats
            .get(id)
            .await
            .map_err(|error| match error.api_code() {
                Some("not_found") => {
                    anyhow::anyhow!("no chat {id:?} on this server (or not yours)")
                }
                _ => anyhow::Error::new(error).context(format!("cannot open chat {id:?}")),
            })?;
        if let Some(bot) = bot.filter(|bot| *bot != chat.bot) {
            eprintln!(
                "rill: chat {} talks to bot {:?}; --bot {bot:?} is ignored",
                chat.id, chat.bot
            );
        }
        if interactive {
            println!("chat {} with bot {}", chat.id, chat.bot);
            show_history(chats, &chat.id).await?;
        }
        return Ok(chat.id);
    }
    let bots = chats
        .bots()
        .await
        .context("cannot list the server's bots")?;
    let names = || {
        bots.iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bot = match bot {
        Some(wanted) => match bots.iter().find(|b| b.id == wanted) {
            Some(bot) => bot,
            None => bail!("unknown bot {wanted:?}; this server has: {}", names()),
        },
        None => match bots.iter().find(|b| b.id == DEFAULT_BOT).or(bots.first()) {
            Some(bot) => bot,
            None => bail!("the server has no bots configured"),
        },
    };
    let chat = chats
        .create(&bot.id)
        .await
        .with_context(|| format!("cannot start a chat with bot {:?}", bot.id))?;
    if interactive {
        println!(
            "chat {} with bot {} ({}); come back to it with --chat {}",
            chat.id, bot.id, bot.name, chat.id
        );
    }
    Ok(chat.id)
}

/// Prints the last messages of a continued chat, so the user sees where it stands.
async fn show_history(chats: &ChatsClient, chat: &str) -> anyhow::Result<()> {
    let page = chats
        .messages(chat, None, Some(HISTORY_SHOWN))
        .await
        .context("cannot read the chat's history")?;
    for message in page.messages {
        let who = match message.role {
            Role::User => "you",
            _ => "bot",
        };
        println!("{who}> {}", message.content);
        if message.status != MessageStatus::Complete && message.role == Role::Assistant {
            println!("   [{}]", message.status);
        }
    }
    Ok(())
}

/// Sends one message and prints exactly the answer's text (with a final newline only when
/// stdout is a terminal); a non-complete answer is an error (its partial text stays printed).
async fn one_shot_answer(
    chats: &ChatsClient,
    chat: &str,
    message: &str,
    json: bool,
) -> anyhow::Result<()> {
    let stream = chats
        .send(chat, message)
        .await
        .context("the message was not accepted")?;
    let mut out = AnswerPrinter::new(json);
    let outcome = out.print(stream, None).await;
    if std::io::stdout().is_terminal() {
        out.end_line()?;
    }
    outcome?.into_result()
}

/// An interactive session: a prompt, a line sent per message, answers streamed; Ctrl-C during
/// an answer stops it, Ctrl-C at the prompt or Ctrl-D (end of input) ends the session.
async fn interactive_session(chats: &ChatsClient, chat: &str, json: bool) -> anyhow::Result<()> {
    println!("Type a message and press Enter; Ctrl-C stops an answer, Ctrl-D quits.");
    let mut lines = stdin_lines();
    loop {
        print!("you> ");
        std::io::stdout()
            .flush()
            .context("cannot write to stdout")?;
        let line = tokio::select! {
            line = lines.recv() => line,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(line) = line else {
            println!();
            return Ok(());
        };
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let stream = match chats.send(chat, &line).await {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("rill: not sent: {}", describe(&error));
                continue;
            }
        };
        if !json {
            print!("bot> ");
        }
        let mut out = AnswerPrinter::new(json);
        let outcome = out.print(stream, Some((chats, chat))).await;
        out.end_line()?;
        match outcome {
            // Asked for with Ctrl-C: no error, the session goes on.
            Ok(Outcome {
                status: MessageStatus::Stopped,
                ..
            }) => eprintln!("[stopped; the text so far is kept]"),
            Ok(outcome) => {
                if let Err(error) = outcome.into_result() {
                    eprintln!("rill: {error:#}");
                }
            }
            Err(error) => eprintln!("rill: the answer stream failed: {error:#}"),
        }
    }
}

/// Lines of standard input, read on a thread of their own (blocking reads have no place on the
/// runtime) and handed over one at a time; the channel closes at end of input.
fn stdin_lines() -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// How an answer ended.
struct Outcome {
    status: MessageStatus,
    error: Option<String>,
}

impl Outcome {
    fn into_result(self) -> anyhow::Result<()> {
        match (self.status, self.error) {
            (MessageStatus::Complete, _) => Ok(()),
            (status, Some(error)) => bail!("the answer ended with status {status}: {error}"),
            (status, None) => bail!("the answer ended with status {status}"),
        }
    }
}

/// Prints an answer as it streams, exactly once: its text on stdout (deltas appended, a
/// snapshot after a resume that could not replay exactly only adds what is not printed yet),
/// its reasoning, tool calls and sources on stderr; or every event as JSON.
struct AnswerPrinter {
    stdout: std::io::Stdout,
    /// The text printed so far.
    shown: String,
    json: bool,
    /// Standard error is a terminal: reasoning is dimmed.
    dim: bool,
    /// Reasoning is being printed (its line is open on stderr).
    thinking: bool,
    /// Tool calls printed already, by part index.
    tools_shown: std::collections::HashSet<usize>,
}

impl AnswerPrinter {
    fn new(json: bool) -> Self {
        AnswerPrinter {
            stdout: std::io::stdout(),
            shown: String::new(),
            json,
            dim: std::io::stderr().is_terminal(),
            thinking: false,
            tools_shown: std::collections::HashSet::new(),
        }
    }

    /// Prints the answer of `stream` until it completes. With `stop`, Ctrl-C stops the
    /// generation on the server (and the stream goes on to its `stopped` end).
    async fn print(
        &mut self,
        mut stream: rill_client::ChatStream,
        stop: Option<(&ChatsClient, &str)>,
    ) -> anyhow::Result<Outcome> {
        let assistant = stream.accepted().assistant_message.id.clone();
        let mut failure: Option<String> = None;
        let mut stop_sent = false;
        loop {
            let item = match stop {
                Some((chats, chat)) if !stop_sent => tokio::select! {
                    item = stream.next() => item,
                    _ = tokio::signal::ctrl_c() => {
                        stop_sent = true;
                        if let Err(error) = chats.stop(chat).await {
                            // `not_generating`: it ended meanwhile; the stream says how.
                            tracing::debug!(%error, "stop refused");
                        }
                        continue;
                    }
                },
                _ => stream.next().await,
            };
            let Some(item) = item else {
                self.end_thinking();
                bail!("the answer stream ended before the answer did");
            };
            let event = match item? {
                ChatUpdate::Event(event) => event,
                // The first drop of a healthy stream is routine (the server ends streams at
                // their maximum duration); say something only when it keeps failing.
                ChatUpdate::Reconnecting { error, attempt, .. } => {
                    if attempt > 1 {
                        eprintln!("\nrill: connection lost ({error}); resuming");
                    }
                    continue;
                }
                _ => continue,
            };
            if self.json {
                self.json_line(&event)?;
            }
            let answer = stream.message();
            match &event {
                ChatEvent::Error { code, message, .. } => {
                    failure = Some(format!("{message} ({code})"));
                }
                ChatEvent::Completed {
                    message_id,
                    status,
                    error,
                    ..
                } if *message_id == assistant => {
                    if !self.json {
                        self.end_thinking();
                        self.show_tools(answer, true);
                    }
                    return Ok(Outcome {
                        status: *status,
                        error: error.clone().or(failure),
                    });
                }
                _ if self.json => {}
                ChatEvent::Delta {
                    message_id,
                    kind: DeltaKind::Text,
                    text,
                    ..
                } if *message_id == assistant => {
                    self.end_thinking();
                    let text = text.clone();
                    self.write(&text)?;
                }
                ChatEvent::Delta {
                    message_id,
                    kind: DeltaKind::Reasoning,
                    text,
                    ..
                } if *message_id == assistant => self.think(text),
                ChatEvent::Snapshot(message) if message.id == assistant => {
                    match message.content.strip_prefix(self.shown.as_str()) {
                        Some(rest) => {
                            let rest = rest.to_owned();
                            self.write(&rest)?;
                        }
                        None => {
                            // Cannot happen with a consistent server: the text so far always
                            // extends what came before. Say so rather than print nonsense.
                            eprintln!("\nrill: the answer's text changed on resume; it is now:");
                            self.shown.clear();
                            self.write(&message.content)?;
                        }
                    }
                }
                ChatEvent::PartStarted {
                    message_id,
                    value: Part::Source { url, title },
                    ..
                } if *message_id == assistant => {
                    self.end_thinking();
                    eprintln!(
                        "[source] {}{url}",
                        title
                            .as_deref()
                            .map(|t| format!("{t} "))
                            .unwrap_or_default()
                    );
                }
                ChatEvent::ToolResult { message_id, .. } if *message_id == assistant => {
                    self.end_thinking();
                    self.show_tools(answer, false);
                }
                _ => {}
            }
        }
    }

    /// One line per tool call: when its result is in, or (`all`) at the end of the answer.
    fn show_tools(&mut self, answer: &rill_client::Message, all: bool) {
        for (index, part) in answer.parts.iter().enumerate() {
            let Part::ToolCall {
                name,
                input_text,
                output,
                error,
                ..
            } = part
            else {
                continue;
            };
            if self.tools_shown.contains(&index) || (!all && output.is_none() && error.is_none()) {
                continue;
            }
            self.tools_shown.insert(index);
            let result = match (output, error) {
                (_, Some(error)) => format!(" -> error: {error}"),
                (Some(output), None) => format!(" -> {output}"),
                (None, None) => String::new(),
            };
            eprintln!("[tool] {name}({input_text}){result}");
        }
    }

    /// Streams reasoning to stderr, dimmed on a terminal.
    fn think(&mut self, text: &str) {
        let mut err = std::io::stderr();
        if !self.thinking {
            self.thinking = true;
            let _ = write!(err, "{}[thinking] ", if self.dim { "\x1b[2m" } else { "" });
        }
        let _ = write!(err, "{text}");
        let _ = err.flush();
    }

    fn end_thinking(&mut self) {
        if std::mem::take(&mut self.thinking) {
            eprintln!("{}", if self.dim { "\x1b[0m" } else { "" });
        }
    }

    /// One event as a line of JSON: `{"event": name, "data": ...}`.
    fn json_line(&mut self, event: &ChatEvent) -> anyhow::Result<()> {
        let data: serde_json::Value =
            serde_json::from_slice(&event.data()).unwrap_or(serde_json::Value::Null);
        let line = serde_json::json!({ "event": event.name(), "data": data });
        writeln!(self.stdout, "{line}")
            .and_then(|()| self.stdout.flush())
            .context("cannot write to stdout")
    }

    /// Writes `text` at once (flushed: tokens show as they come) and remembers it.
    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        self.stdout
            .write_all(text.as_bytes())
            .and_then(|()| self.stdout.flush())
            .context("cannot write to stdout")?;
        self.shown.push_str(text);
        Ok(())
    }

    /// Ends the line the answer left open.
    fn end_line(&mut self) -> anyhow::Result<()> {
        if self.json {
            return Ok(());
        }
        if !self.shown.ends_with('\n') || self.shown.is_empty() {
            self.write("\n")?;
        }
        Ok(())
    }
}

/// A refusal of the server in a line: its message and code when it sent one.
fn describe(error: &Error) -> String {
    match error.api() {
        Some(api) => format!("{} ({})", api.message, api.code),
        None => error.to_string(),
    }
}
