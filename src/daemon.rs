//! The daemon: wires sources, store, rules, dispatch and the server together,
//! reloads on SIGHUP, stops on SIGTERM/SIGINT, and talks to systemd.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{self, LoadedConfig, LocatedErrors};
use crate::server::{self, AppState};
use crate::source::probe::{ProbeDeps, ProbeManager};
use crate::store::{Store, StoreError};
use crate::tsdb::{NullSink, SampleSink};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid config:\n{0}")]
    Config(#[from] LocatedErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot listen on {addr}: {source} (is another process using the port? change `listen:`)"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A running daemon.
pub struct Daemon {
    config: tokio::sync::Mutex<LoadedConfig>,
    local_addr: SocketAddr,
    probes: Arc<ProbeManager>,
    store: Store,
    registry: prometheus::Registry,
    shutdown_tx: watch::Sender<bool>,
    server: tokio::sync::Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

fn register_build_info(registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
    let build_info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "rearguard_build_info",
            "A metric with a constant '1' value labelled by version and the Rust version it was built with.",
        ),
        &["version", "rustc"],
    )?;
    build_info
        .with_label_values(&[
            env!("CARGO_PKG_VERSION"),
            option_env!("RUSTC_VERSION").unwrap_or("unknown"),
        ])
        .set(1);
    registry.register(Box::new(build_info))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(())
}

impl Daemon {
    /// Opens the store, starts the sources and the server. `listener`, when
    /// given, replaces binding `listen:` (tests bind 127.0.0.1:0 themselves).
    pub async fn start(
        config: LoadedConfig,
        clock: Clock,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<Daemon, DaemonError> {
        let state_dir = config.state_dir();
        let store = tokio::task::spawn_blocking(move || Store::open(&state_dir))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let registry = prometheus::Registry::new();
        register_build_info(&registry)?;
        let sink: Arc<dyn SampleSink> = Arc::new(NullSink);
        let probes = Arc::new(ProbeManager::new(ProbeDeps {
            clock: clock.clone(),
            sink,
            store: store.clone(),
            registry: registry.clone(),
        }));
        probes.apply(&config.config.probes);

        let listener = match listener {
            Some(l) => l,
            None => {
                let addr = config.config.listen;
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Listen { addr, source })?
            }
        };
        let local_addr = listener
            .local_addr()
            .map_err(|source| DaemonError::Listen {
                addr: config.config.listen,
                source,
            })?;
        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        let ready_probes = probes.clone();
        let state = AppState {
            registry: registry.clone(),
            ready: Arc::new(move || ready_probes.first_round_done()),
            admin_token: config.admin_token.clone(),
        };
        let server = tokio::spawn(server::serve(listener, state, async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        }));
        tracing::info!(listen = %local_addr, probes = config.config.probes.len(), "rearguard started");
        Ok(Daemon {
            config: tokio::sync::Mutex::new(config),
            local_addr,
            probes,
            store,
            registry,
            shutdown_tx,
            server: tokio::sync::Mutex::new(Some(server)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    pub fn ready(&self) -> bool {
        self.probes.first_round_done()
    }

    /// Applies a new, already validated config. Unchanged probes keep their schedule.
    pub async fn apply(&self, new: LoadedConfig) {
        let mut current = self.config.lock().await;
        if new.config.listen != current.config.listen {
            tracing::warn!(
                old = %current.config.listen,
                new = %new.config.listen,
                "listen address changes take effect only after a restart"
            );
        }
        if new.state_dir() != current.state_dir() {
            tracing::warn!("state_dir changes take effect only after a restart");
        }
        self.probes.apply(&new.config.probes);
        *current = new;
    }

    /// Reloads the config file the daemon was started with. A bad config is
    /// rejected with its errors and the running one stays.
    pub async fn reload(&self) -> Result<(), LocatedErrors> {
        let path = self.config.lock().await.path.clone();
        let loaded = load_config(&path).await?;
        self.apply(loaded).await;
        Ok(())
    }

    /// Stops the server and every task; returns within a few seconds.
    pub async fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        self.probes.shutdown().await;
        if let Some(handle) = self.server.lock().await.take() {
            // Graceful shutdown waits for open connections; do not wait forever.
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Loads and validates a config off the async runtime.
pub async fn load_config(path: &Path) -> Result<LoadedConfig, LocatedErrors> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || config::load(&path))
        .await
        .unwrap_or_else(|e| {
            Err(LocatedErrors(vec![config::LocatedError::new(
                Path::new("<config>"),
                config::Pos::default(),
                format!("config loader failed: {e}"),
            )]))
        })
}

/// Runs the daemon until SIGTERM or SIGINT, reloading on SIGHUP, with sd-notify.
pub async fn run(config_path: &Path) -> Result<(), DaemonError> {
    let config = load_config(config_path).await?;
    let daemon = Daemon::start(config, Clock::system(), None).await?;
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let watchdog = spawn_watchdog();

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("installing SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received, stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT received, stopping"); break; }
            _ = hup.recv() => {
                notify_systemd(&[sd_notify::NotifyState::Reloading, monotonic_usec()]);
                match daemon.reload().await {
                    Ok(()) => tracing::info!(config = %config_path.display(), "config reloaded"),
                    Err(errors) => {
                        for e in &errors.0 {
                            tracing::error!(error = %e, "config reload rejected; the running config stays");
                        }
                    }
                }
                notify_systemd(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    if let Some(w) = watchdog {
        w.abort();
    }
    daemon.shutdown().await;
    tracing::info!("rearguard stopped");
    Ok(())
}

fn monotonic_usec() -> sd_notify::NotifyState<'static> {
    sd_notify::NotifyState::monotonic_usec_now()
        .unwrap_or(sd_notify::NotifyState::Status("reloading"))
}

fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

/// Pings systemd's watchdog at half of `WatchdogSec` when it is set.
fn spawn_watchdog() -> Option<JoinHandle<()>> {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            notify_systemd(&[sd_notify::NotifyState::Watchdog]);
        }
    }))
}
