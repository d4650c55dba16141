//! `rill serve`: resolve the configuration, bind, serve until SIGINT/SIGTERM, drain.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::chat_config::Broker;
use crate::config::ServeArgs;

pub(crate) fn main(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    let filter = EnvFilter::try_new(&settings.log)
        .with_context(|| format!("invalid value {:?} for `log`", settings.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    let signals = Signals::install();

    let chat = settings.chat;
    let store = rill_store::connect_with(&chat.database, &settings.store)
        .await
        .map_err(|e| {
            let text = e.to_string();
            let keys = if text.contains("TLS") || text.contains("CA file") {
                "settings `database`, `database_ca_file`"
            } else if text.contains("Run `rill migrate`") {
                "settings `database`, `database_migrations`"
            } else {
                "setting `database`"
            };
            anyhow::Error::new(e).context(format!("cannot open the chat database ({keys})"))
        })?;
    let (state, several_instances) = match &chat.broker {
        Broker::Memory => (
            rill_server::AppState::new(config.clone(), shutdown.clone()),
            false,
        ),
        Broker::Redis { url, key_prefix } => {
            let streams = &config.streams;
            let redis = rill_redis::RedisBrokerConfig {
                key_prefix: key_prefix.clone(),
                retention_count: streams.retention.max_events as u64,
                retention_age: Some(streams.retention.max_age),
                tls_ca_file: settings.redis.ca_file.clone(),
                cluster: settings.redis.cluster,
                ..rill_redis::RedisBrokerConfig::new(url.clone())
            };
            let broker = rill_redis::RedisBroker::connect(redis).await.map_err(|e| {
                use rill_redis::{ConfigError, ConnectError};
                let keys = match &e {
                    ConnectError::Tls { .. }
                    | ConnectError::Config(ConfigError::BadCaFile { .. }) => {
                        "settings `broker`, `redis_ca_file`"
                    }
                    ConnectError::Config(ConfigError::BadCluster(_)) => {
                        "settings `broker`, `redis_cluster`"
                    }
                    _ => "setting `broker`",
                };
                anyhow::Error::new(e).context(format!("cannot use the Redis broker ({keys})"))
            })?;
            // Stream tickets are single use across every instance sharing this Redis.
            let spent = Arc::new(broker.clone());
            let hub = Arc::new(rill_hub::Hub::new(Arc::new(broker), streams.hub));
            (
                rill_server::AppState::with_hub(config.clone(), shutdown.clone(), hub)
                    .with_spent_tickets(spent),
                true,
            )
        }
    };
    let bots = build_bots(chat.bots, &chat.providers)?;
    let lease_ttl = chat.engine.lease_ttl;
    let engine = rill_chat::ChatEngine::new(store, state.hub.broker().clone(), bots, chat.engine);
    let recovered = if several_instances {
        // Other instances may be running generations: only those whose lease expired are over,
        // and a reaper keeps looking, so a dead instance's answers end within about
        // `lease_ttl` plus half of it.
        engine.spawn_reaper(lease_ttl / 2);
        engine.recover(false).await
    } else {
        // One instance with the in-process broker: nothing else can be running a generation,
        // so every message left `streaming` by a previous run is over.
        engine.recover(true).await
    }
    .context("cannot recover interrupted generations")?;
    if recovered > 0 {
        tracing::info!(
            recovered,
            "marked generations of a previous run interrupted"
        );
    }
    let state = state.with_chat(engine.clone());

    tracing::info!(address = %listener.local_addr()?, "rill is listening");
    let drain = tokio::spawn(drain_on_signal(
        signals,
        state.clone(),
        engine,
        settings.drain_timeout,
        config.shutdown_grace,
        several_instances,
    ));
    let served = rill_server::serve(listener, state).await;
    // The drain task fired the shutdown; it has finished its work by then.
    let _ = drain.await;
    served.context("the server failed")?;
    tracing::info!("rill stopped");
    Ok(())
}

/// The end of an instance's life, in the order a rolling deploy needs:
///
/// 1. On the first SIGTERM/SIGINT it **drains**: `/readyz` answers 503 (the load balancer stops
///    sending work here), open streams end with `server_shutdown` telling their clients to
///    reconnect (to another instance), new streams and answers get `503 draining`; running
///    answers go on.
/// 2. It waits for them, at most `drain_timeout` (or until a second signal).
/// 3. What still runs is **handed over** when other instances share the broker (each stops,
///    saves what it has and releases its lease, and another instance continues it), or ends
///    `interrupted` on a single instance.
/// 4. The server stops accepting and closes its connections (within `shutdown_grace`).
async fn drain_on_signal(
    mut signals: Signals,
    state: rill_server::AppState,
    engine: rill_chat::ChatEngine,
    drain_timeout: std::time::Duration,
    grace: std::time::Duration,
    several_instances: bool,
) {
    signals.next().await;
    let running = engine.running();
    tracing::info!(
        running,
        drain_timeout_secs = drain_timeout.as_secs_f64(),
        "draining: streams told to reconnect elsewhere, no new answers; a second signal stops at once"
    );
    state.start_draining();
    tokio::select! {
        left = engine.drain(drain_timeout) => {
            if left > 0 {
                tracing::warn!(left, "answers still running at the end of the drain");
            }
        }
        () = signals.next() => tracing::info!("second signal: stopping now"),
    }
    if several_instances {
        engine.hand_over(grace).await;
    } else {
        engine.shutdown(grace).await;
    }
    state.shutdown.cancel();
}

/// The configured bots, or the defaults (demo, plus OpenAI/Anthropic when their key is set),
/// each with its provider.
fn build_bots(
    configured: Option<Vec<rill_core::BotConfig>>,
    settings: &rill_providers::ProviderSettings,
) -> anyhow::Result<Vec<rill_chat::Bot>> {
    let env = |name: &str| std::env::var(name).ok();
    let configs = configured.unwrap_or_else(|| rill_providers::default_bots(&env));
    configs
        .into_iter()
        .map(|config| {
            let provider = rill_providers::build_provider(&config, &env, settings)
                .with_context(|| format!("cannot set up bot {:?}", config.id))?;
            tracing::info!(bot = %config.id, provider = ?config.provider, model = %config.model, "bot ready");
            Ok(rill_chat::Bot { config, provider })
        })
        .collect()
}

/// SIGINT and SIGTERM, as a stream of "a signal came".
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installed before anything else runs, so an early signal is not lost.
    fn install() -> Self {
        #[cfg(unix)]
        {
            let terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => Some(signal),
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for SIGTERM");
                        None
                    }
                };
            Signals { terminate }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        let terminate = async {
            match &mut self.terminate {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    }
}
