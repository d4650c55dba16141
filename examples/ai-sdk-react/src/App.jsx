// useChat from @ai-sdk/react, unmodified, against rill's AI SDK face (docs/ai-sdk.md):
// - the chat id lives in the URL (?chat=...), so a reload comes back to the same chat;
// - the stored history comes from rill (GET /api/ai-sdk/chat/{id}/messages) and is handed to
//   useChat once, before it starts;
// - `resume: true` picks up an answer that is still being written (after a reload, or in a
//   second tab) from its start, so each part appears once;
// - Stop calls rill's stop (which ends the model's answer for every tab) and then useChat's own
//   stop() (which only aborts this tab's request).
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useEffect, useMemo, useState } from "react";

const API = "/api/ai-sdk/chat";

/** The chat of this page: `?chat=` of the URL, or a new id put there. */
function chatIdFromUrl() {
  const url = new URL(window.location.href);
  let id = url.searchParams.get("chat");
  if (!id) {
    id = crypto.randomUUID();
    url.searchParams.set("chat", id);
    window.history.replaceState(null, "", url);
  }
  return id;
}

export function App() {
  const [chatId] = useState(chatIdFromUrl);
  const [history, setHistory] = useState(null);
  useEffect(() => {
    fetch(`${API}/${encodeURIComponent(chatId)}/messages`)
      .then((r) => (r.ok ? r.json() : { messages: [] }))
      .then((body) => setHistory(body.messages))
      .catch(() => setHistory([]));
  }, [chatId]);
  if (history === null) return <main>Loading…</main>;
  return <Chat id={chatId} initialMessages={history} />;
}

function Chat({ id, initialMessages }) {
  // `bot` goes with every request; rill uses it when this request creates the chat.
  const bot = new URL(window.location.href).searchParams.get("bot") ?? undefined;
  const transport = useMemo(() => new DefaultChatTransport({ api: API, body: { bot } }), [bot]);
  const { messages, sendMessage, status, stop, error } = useChat({
    id,
    messages: initialMessages,
    resume: true,
    transport,
  });
  const [input, setInput] = useState("");
  const busy = status === "submitted" || status === "streaming";

  async function stopAnswer() {
    // rill's stop ends the answer itself: the upstream request is closed, the text kept.
    await fetch(`${API}/${encodeURIComponent(id)}/stop`, { method: "POST" }).catch(() => {});
    // useChat's stop() only aborts this tab's request (a no-op once rill has ended the stream).
    await stop();
  }

  return (
    <main>
      <header>
        <h1>rill × AI SDK</h1>
        <span id="status" data-status={status}>{status}</span>
      </header>
      <ol id="messages">
        {messages.map((m) => (
          <li key={m.id} className={`message ${m.role}`} data-id={m.id} data-role={m.role}>
            {m.parts.map((part, i) => (
              <MessagePart key={i} part={part} />
            ))}
          </li>
        ))}
      </ol>
      {error && <p id="error">{error.message}</p>}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (!input.trim() || busy) return;
          sendMessage({ text: input });
          setInput("");
        }}
      >
        <input id="input" value={input} onChange={(e) => setInput(e.target.value)} placeholder="Ask something (try: weather in Seoul)" />
        <button id="send" type="submit" disabled={busy}>Send</button>
        <button id="stop" type="button" onClick={stopAnswer} disabled={!busy}>Stop</button>
      </form>
    </main>
  );
}

function MessagePart({ part }) {
  switch (part.type) {
    case "text":
      return <p className="part text" data-state={part.state}>{part.text}</p>;
    case "reasoning":
      return (
        <details className="part reasoning" data-state={part.state}>
          <summary>Reasoning</summary>
          <p>{part.text}</p>
        </details>
      );
    case "source-url":
      return <a className="part source" href={part.url}>{part.title ?? part.url}</a>;
    default:
      if (part.type.startsWith("tool-")) {
        return (
          <div className="part tool" data-state={part.state}>
            <code>{part.type.slice("tool-".length)}({JSON.stringify(part.input ?? {})})</code>
            {part.state === "output-available" && <pre>{JSON.stringify(part.output)}</pre>}
            {part.state === "output-error" && <pre>{part.errorText}</pre>}
          </div>
        );
      }
      return null; // step-start and the rest
  }
}
