//! The `rill` command line: parse arguments, set up logging, hand off to a subcommand.

mod bench_cmd;
mod chat_cmd;
mod chat_config;
mod config;
mod migrate_cmd;
mod pub_cmd;
mod serve;
mod sse_cmd;
mod sub_cmd;
mod token_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rill: stream live data and LLM chat answers to browsers over Server-Sent Events.
#[derive(Debug, Parser)]
#[command(name = "rill", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, SQLite file rill.db, in-process broker).
    Serve(Box<config::ServeArgs>),
    /// Apply the database migrations and exit (for deploys that migrate before rolling out).
    Migrate(Box<migrate_cmd::MigrateArgs>),
    /// SSE wire tools: `rill sse parse` prints the events of an SSE byte stream read on stdin.
    Sse(sse_cmd::SseArgs),
    /// Mint a development HS256 token from the configured `jwt_secret` and print it.
    Token(token_cmd::TokenArgs),
    /// Chat with a bot: interactive, or one message in and exactly the answer's text out.
    Chat(Box<chat_cmd::ChatArgs>),
    /// Subscribe to topics (or any SSE endpoint by URL) and print events as they come.
    Sub(Box<sub_cmd::SubArgs>),
    /// Publish one event to a topic and print its id.
    Pub(pub_cmd::PubArgs),
    /// Load and latency scenarios against a running server: connections, fanout, chat, stalled.
    Bench(bench_cmd::BenchArgs),
}

/// jemalloc, with background purging (options in .cargo/config.toml): after a burst, such as
/// hundreds of stalled readers dropped at once, the memory goes back to the system (glibc's
/// malloc kept most of it; docs/benchmarks.md, "Memory returns").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::main(*args),
        Command::Migrate(args) => migrate_cmd::main(*args),
        Command::Sse(args) => sse_cmd::main(args),
        Command::Token(args) => token_cmd::main(args),
        Command::Chat(args) => chat_cmd::main(*args),
        Command::Sub(args) => sub_cmd::main(*args),
        Command::Pub(args) => pub_cmd::main(args),
        Command::Bench(args) => bench_cmd::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rill: {error:#}");
            ExitCode::FAILURE
        }
    }
}
