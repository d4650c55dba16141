//! `rill serve`: resolve the configuration, bind, serve until SIGINT/SIGTERM, drain.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::ServeArgs;

pub(crate) fn main(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    let filter = EnvFilter::try_new(&settings.log)
        .with_context(|| format!("invalid value {:?} for `log`", settings.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(settings))
}

async fn run(settings: crate::config::Settings) -> anyhow::Result<()> {
    let config = Arc::new(settings.server);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (setting `listen`)", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));

    tracing::info!(address = %listener.local_addr()?, "rill is listening");
    let state = rill_server::AppState::new(config, shutdown);
    rill_server::serve(listener, state)
        .await
        .context("the server failed")?;
    tracing::info!("rill stopped");
    Ok(())
}

/// Fires `shutdown` on the first SIGINT or SIGTERM.
async fn signal_shutdown(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: telling streams to reconnect elsewhere");
    shutdown.cancel();
}
