//! `rill pub`: publish one event to a rill topic and print its id.

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::sub_cmd::{ServerArgs, read_data};

/// Flags of `rill pub`.
#[derive(Debug, Args)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// The topic to publish to.
    #[arg(value_name = "TOPIC")]
    topic: String,

    /// The event's data: JSON (`{"a":1}`, `42`, `"text"`); anything that is not valid JSON is
    /// sent as a JSON string. `@FILE` reads a file, `-` standard input.
    #[arg(value_name = "DATA")]
    data: String,

    /// The event name [default: the server's, `message`].
    #[arg(long, value_name = "NAME")]
    event: Option<String>,

    /// Send DATA as a JSON string even when it is valid JSON (so `42` stays the text "42").
    #[arg(long)]
    string: bool,
}

pub(crate) fn main(args: PubArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: PubArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let bytes = read_data(&args.data)?;
    let data = to_json(bytes, args.string)?;
    let published = client
        .topics()
        .publish(&args.topic, args.event.as_deref(), &data)
        .await
        .with_context(|| format!("cannot publish to topic {:?}", args.topic))?;
    println!("{}", published.id);
    Ok(())
}

/// DATA as JSON when it parses (and `--string` is not given), else as a JSON string.
fn to_json(bytes: Vec<u8>, force_string: bool) -> anyhow::Result<Value> {
    if !force_string && let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
        return Ok(value);
    }
    let text = String::from_utf8(bytes).context("DATA is neither JSON nor UTF-8 text")?;
    Ok(Value::String(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_json_when_it_parses_and_a_string_otherwise() {
        let check = |data: &str, string: bool| {
            to_json(data.as_bytes().to_vec(), string)
                .unwrap()
                .to_string()
        };
        assert_eq!(check(r#"{"a": 1}"#, false), r#"{"a":1}"#);
        assert_eq!(check("42", false), "42");
        assert_eq!(check("42", true), r#""42""#);
        assert_eq!(check("hello world", false), r#""hello world""#);
        assert_eq!(check(r#""quoted""#, false), r#""quoted""#);
        assert!(to_json(vec![0xff], false).is_err());
    }
}
