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
use crate::tsdb::SampleSink;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
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
    #[error(transparent)]
    Start(#[from] StartError),
}

use crate::action::{ActionDeps, ActionRunner, CloudRunApi, ServingHistory};
use crate::adapters::{
    self, notification_channel, DispatchIntervals, FanOut, LogAndProbeEvidence, NoCloudRun,
    NotifyEvidence, RulesAlertState, TsdbRequestCounts,
};
use crate::dispatch::{Dispatcher, DispatcherDeps};
use crate::gcp::GcpContext;
use crate::notify::{NotifierConfig, Outbox, OutboxOptions};
use crate::promql::{Engine, EngineOptions};
use crate::rules::{LocalQuerier, ManagerOptions, RuleManager, RulesConfig, RulesDeps};
use crate::server::auth::AdminToken;
use crate::source::cloud_logging::CloudLoggingManager;
use crate::source::cloud_monitoring::{CloudMonitoringManager, GcpSourceDeps};
use crate::source::cloud_run::CloudRunManager;
use crate::source::health::{SourceHealth, WatchedQuerier};
use crate::tsdb::{DurableOptions as TsdbDurableOptions, Tsdb};

/// How often samples older than `retention` are dropped.
const TSDB_GC_EVERY: Duration = Duration::from_secs(60);

/// The Google sources, when the config has a `gcp:` section.
struct GoogleSources {
    monitoring: CloudMonitoringManager,
    logging: CloudLoggingManager,
    run: CloudRunManager,
}

/// A running daemon.
pub struct Daemon {
    config: tokio::sync::Mutex<LoadedConfig>,
    local_addr: SocketAddr,
    clock: Clock,
    tsdb: Arc<Tsdb>,
    probes: Arc<ProbeManager>,
    gcp: Option<GcpContext>,
    google: Option<GoogleSources>,
    rules: Arc<RuleManager>,
    source_health: SourceHealth,
    /// The actions' request counts (whether a source reads them follows reloads).
    request_counts: Arc<TsdbRequestCounts>,
    /// What the actions ask of the rules (its source lags follow reloads).
    rules_state: Arc<RulesAlertState>,
    dispatcher: Arc<Dispatcher>,
    outbox: Outbox,
    actions: Arc<ActionRunner>,
    store: Store,
    registry: prometheus::Registry,
    shutdown_tx: watch::Sender<bool>,
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    server: tokio::sync::Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Google Cloud: {0}")]
    Gcp(#[from] crate::gcp::GcpError),
    #[error("dispatch: {0}")]
    Dispatch(#[from] crate::dispatch::DispatchError),
    #[error("notifications: {0}")]
    Outbox(#[from] crate::notify::OutboxStartError),
    #[error("rules: {}", .0.join("; "))]
    Rules(Vec<String>),
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

/// The rules engine's view of a loaded config, with Cloud Monitoring's
/// PromQL endpoint added as a query source where the config names one.
fn rules_config(
    config: &LoadedConfig,
    gcp: Option<&GcpContext>,
    clock: &Clock,
    health: &SourceHealth,
) -> Result<RulesConfig, LocatedErrors> {
    let mut rc = rules_config_unwatched(config, gcp)?;
    // Remote query sources report rearguard_source_up like the Google sources.
    let interval = rc.evaluation_interval;
    for (name, q) in rc.sources.iter_mut() {
        *q = Arc::new(WatchedQuerier::new(
            name,
            q.clone(),
            interval,
            clock.clone(),
            health.clone(),
        ));
    }
    Ok(rc)
}

fn rules_config_unwatched(
    config: &LoadedConfig,
    gcp: Option<&GcpContext>,
) -> Result<RulesConfig, LocatedErrors> {
    let mut rc = RulesConfig::from_loaded(config).map_err(LocatedErrors)?;
    for (name, source) in &config.config.query_sources {
        if let crate::config::gcp::QuerySourceConfig::CloudMonitoringPromql { project, timeout } =
            source
        {
            if let Some(ctx) = gcp {
                let client = ctx.promql(project.as_deref(), timeout.map(|t| t.0));
                rc.sources
                    .insert(name.clone(), Arc::new(adapters::GcpPromql(client)));
            }
        }
    }
    Ok(rc)
}

impl Daemon {
    /// Opens the store, starts every component and the server. `listener`,
    /// when given, replaces binding `listen:` (tests bind 127.0.0.1:0 themselves).
    pub async fn start(
        config: LoadedConfig,
        clock: Clock,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<Daemon, DaemonError> {
        let state_dir = config.state_dir();
        let store_dir = state_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&store_dir))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let registry = prometheus::Registry::new();
        register_build_info(&registry)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let c = &config.config;
        // Bound first: a probe of our own /healthz (the example config) then
        // waits in the listen queue instead of failing before the server runs,
        // and a busy address fails before anything starts.
        let listener = match listener {
            Some(l) => l,
            None => {
                let addr = c.listen;
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Listen { addr, source })?
            }
        };
        let local_addr = listener
            .local_addr()
            .map_err(|source| DaemonError::Listen {
                addr: c.listen,
                source,
            })?;

        // Sources write into the tsdb.
        // History comes back from state_dir before any source writes (the
        // server, and so readyz, starts after); a tsdb directory that cannot
        // be opened leaves an in-memory tsdb rather than no daemon.
        let tsdb_dir = state_dir.join("tsdb");
        let (retention_ms, now_ms) = (c.retention.as_millis(), clock.now_ms());
        let durable = TsdbDurableOptions {
            flush_every: c.tsdb_flush_interval.0,
            ..TsdbDurableOptions::default()
        };
        let opened = tokio::task::spawn_blocking(move || {
            Tsdb::open_durable(&tsdb_dir, retention_ms, now_ms, durable)
        })
        .await;
        let tsdb = Arc::new(match opened {
            Ok(Ok((db, _report))) => db,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "tsdb history cannot be opened; keeping samples in memory only");
                Tsdb::new(retention_ms)
            }
            Err(e) => {
                tracing::error!(error = %e, "tsdb replay task failed; keeping samples in memory only");
                Tsdb::new(retention_ms)
            }
        });
        tsdb.register_metrics(&registry)?;
        let sink: Arc<dyn SampleSink> = tsdb.clone();
        let mut tasks = vec![
            tokio::spawn(
                tsdb.clone()
                    .run_gc(clock.clone(), TSDB_GC_EVERY, shutdown_rx.clone()),
            ),
            tokio::spawn(
                tsdb.clone()
                    .run_wal(durable.flush_every, shutdown_rx.clone()),
            ),
        ];
        let probes = Arc::new(ProbeManager::new(ProbeDeps {
            clock: clock.clone(),
            sink: sink.clone(),
            store: store.clone(),
            registry: registry.clone(),
        }));
        let gcp = match &c.gcp {
            Some(g) => Some(
                GcpContext::connect(g, &config.base_dir, &registry)
                    .await
                    .map_err(StartError::from)?,
            ),
            None => None,
        };
        // rearguard_source_up of every probe-less source (the gauge and the tsdb).
        let source_health = SourceHealth::register(&registry, sink.clone(), clock.clone())?;
        let google = gcp.as_ref().map(|ctx| {
            let deps = GcpSourceDeps {
                clock: clock.clone(),
                sink: sink.clone(),
                store: store.clone(),
            };
            GoogleSources {
                monitoring: CloudMonitoringManager::new(ctx.clone(), deps.clone())
                    .with_health(source_health.clone()),
                logging: CloudLoggingManager::new(ctx.clone(), deps.clone())
                    .with_health(source_health.clone()),
                run: CloudRunManager::new(ctx.clone(), deps).with_health(source_health.clone()),
            }
        });

        // Effects: the outbox (email, webhook) and the action runner.
        let evidence = Arc::new(NotifyEvidence {
            logs: google.as_ref().map(|g| g.logging.evidence()),
            probes: probes.clone(),
        });
        let outbox = Outbox::start(
            store.clone(),
            clock.clone(),
            &registry,
            NotifierConfig::from_loaded(&config),
            evidence.clone(),
            OutboxOptions::default(),
        )
        .await
        .map_err(StartError::from)?;
        // Cloud Run for the runner: the Admin API and the source's serving
        // history, or without a `gcp:` section `NoCloudRun`, which says so
        // (a Cloud Run action is then skipped with that reason).
        let (cloud_run, serving_history): (Arc<dyn CloudRunApi>, Arc<dyn ServingHistory>) =
            match (&gcp, &google) {
                (Some(ctx), Some(g)) => (Arc::new(ctx.run.clone()), Arc::new(g.run.views())),
                _ => (Arc::new(NoCloudRun), Arc::new(NoCloudRun)),
            };

        // Dispatch routes alerts to the effects. Its sink is a channel: the
        // outbox and the runner it feeds need the dispatcher themselves.
        let (notifications, notification_queue) = notification_channel();
        let dispatcher = Dispatcher::start(
            DispatcherDeps {
                clock: clock.clone(),
                store: store.clone(),
                sink: Arc::new(notifications),
                registry: registry.clone(),
            },
            &config,
        )
        .await
        .map_err(StartError::from)?;

        // Rules read the tsdb and alert dispatch.
        let engine = Engine::new(EngineOptions {
            timeout: Some(c.query.timeout.0),
            max_samples: c.query.max_samples,
            ..EngineOptions::default()
        });
        let rules = Arc::new(RuleManager::new(
            RulesDeps {
                clock: clock.clone(),
                local: Arc::new(LocalQuerier::new(tsdb.clone(), engine.clone())),
                sink: sink.clone(),
                store: store.clone(),
                registry: registry.clone(),
                alerts: dispatcher.clone(),
            },
            ManagerOptions::default(),
        )?);
        let rules_state = Arc::new(RulesAlertState {
            rules: rules.clone(),
            external_labels: c.external_labels.clone(),
            lags: std::sync::RwLock::new(adapters::metric_lags(c)),
        });
        // Alerts posted by external senders (POST /api/v2/alerts) join the same dispatcher.
        let external = crate::dispatch::external::ExternalAlerts::start(
            store.clone(),
            clock.clone(),
            dispatcher.clone(),
            crate::dispatch::dispatcher::DEFAULT_RESOLVE_TIMEOUT,
        )
        .await?;

        // The runner, with everything it asks of the others.
        let request_counts = Arc::new(TsdbRequestCounts {
            querier: Arc::new(LocalQuerier::new(
                tsdb.clone(),
                Engine::new(EngineOptions::default()),
            )),
            configured: std::sync::atomic::AtomicBool::new(TsdbRequestCounts::reads_requests(c)),
        });
        let routing = dispatcher.clone();
        let actions = Arc::new(ActionRunner::new(
            ActionDeps {
                clock: clock.clone(),
                store: store.clone(),
                cloud_run,
                events: dispatcher.clone(),
                event_receivers: Arc::new(move |labels| routing.notifying_receivers(labels)),
                registry: registry.clone(),
                state_dir: state_dir.clone(),
                generator_url: format!("{}/api/v1/rollbacks", external_url(&config)),
                alert_state: Arc::new(adapters::ExternalThenRules {
                    external: external.clone(),
                    rules: rules_state.clone(),
                }),
                probes: probes.clone(),
                time_intervals: Arc::new(DispatchIntervals(dispatcher.clone())),
                serving_history,
                evidence: Arc::new(LogAndProbeEvidence(evidence)),
                requests: request_counts.clone(),
            },
            c,
        )?);
        // Notifications flow from here on: the outbox persists, then the runner acts.
        tasks.push(notification_queue.spawn(Arc::new(FanOut {
            outbox: Arc::new(outbox.clone()),
            actions: (*actions).clone(),
        })));
        // Rollback notices recorded but not notified before a stop or crash.
        let presented = actions.events().present_pending(clock.now_ms()).await;
        if presented > 0 {
            tracing::info!(
                events = presented,
                "presented recorded rollback events to dispatch again"
            );
        }
        tasks.push(
            actions
                .events()
                .spawn_presenter(clock.clone(), shutdown_rx.clone()),
        );

        // Start producing: sources, rules, pending rollback intents.
        probes.apply(&c.probes);
        if let Some(g) = &google {
            g.monitoring.apply(&c.cloud_monitoring);
            g.logging.apply(&c.cloud_logging);
            g.run.apply(&c.cloud_run);
        }
        rules
            .apply(rules_config(&config, gcp.as_ref(), &clock, &source_health)?)
            .await
            .map_err(StartError::Rules)?;
        match actions.reconcile().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(intents = n, "reconciled unfinished rollback intents"),
            Err(e) => tracing::error!(error = %e, "cannot reconcile rollback intents"),
        }
        tasks.push(crate::notify::report::spawn_scheduler(
            outbox.clone(),
            clock.clone(),
            Arc::new(crate::notify::report::StoreReportData {
                store: store.clone(),
                alerts: Some(Arc::new(adapters::StoredAlertHistory(store.clone()))),
                rollbacks: Some(Arc::new(adapters::StoredRollbacks(store.clone()))),
            }),
            shutdown_rx.clone(),
        ));

        // The server.
        let admin_token = AdminToken(config.admin_token.clone());
        let mut api = server::rules_api::router(server::rules_api::RulesApiState {
            manager: rules.clone(),
            dispatcher: Some(dispatcher.clone()),
            db: tsdb.clone(),
            engine,
            clock: clock.clone(),
            query_slots: Arc::new(tokio::sync::Semaphore::new(c.query.max_concurrency)),
        })
        .merge(server::dispatch_api::router(
            server::dispatch_api::DispatchApiState {
                dispatcher: dispatcher.clone(),
                admin_token: admin_token.clone(),
                started_at_ms: clock.now_ms(),
            },
        ))
        .merge(server::alertmanager::router(
            server::alertmanager::AlertmanagerApiState {
                dispatcher: dispatcher.clone(),
                external,
                admin_token: admin_token.clone(),
                alert_token: config.alert_token.clone(),
                started_at_ms: clock.now_ms(),
            },
        ))
        .merge(server::action_api::router(
            server::action_api::ActionApiState {
                runner: (*actions).clone(),
                store: store.clone(),
                state_dir: state_dir.clone(),
                admin_token,
            },
        ));
        if let Some(g) = &google {
            api = api.merge(server::gcp_api::router(g.logging.evidence(), g.run.views()));
        }
        let ready_probes = probes.clone();
        let ready_tsdb = tsdb.clone();
        let state = AppState {
            registry: registry.clone(),
            ready: Arc::new(move || ready_tsdb.replayed() && ready_probes.first_round_done()),
            admin_token: config.admin_token.clone(),
        };
        let mut server_shutdown = shutdown_rx.clone();
        let server = tokio::spawn(server::serve(listener, state, api, async move {
            let _ = server_shutdown.wait_for(|stop| *stop).await;
        }));
        tracing::info!(
            listen = %local_addr,
            probes = c.probes.len(),
            rule_files = config.rule_file_paths.len(),
            "rearguard started"
        );
        Ok(Daemon {
            config: tokio::sync::Mutex::new(config),
            local_addr,
            clock,
            tsdb,
            probes,
            gcp,
            google,
            rules,
            source_health,
            request_counts,
            rules_state,
            dispatcher,
            outbox,
            actions,
            store,
            registry,
            shutdown_tx,
            tasks: tokio::sync::Mutex::new(tasks),
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

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn tsdb(&self) -> &Arc<Tsdb> {
        &self.tsdb
    }

    pub fn rules(&self) -> &Arc<RuleManager> {
        &self.rules
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    pub fn actions(&self) -> &Arc<ActionRunner> {
        &self.actions
    }

    pub fn probes(&self) -> &Arc<ProbeManager> {
        &self.probes
    }

    pub fn ready(&self) -> bool {
        self.tsdb.replayed() && self.probes.first_round_done()
    }

    /// Applies a new, already validated config. Unchanged probes, sources and
    /// rules keep their schedule and state. What cannot change without a
    /// restart (listen address, state_dir, tsdb_flush_interval, Google
    /// credentials) is logged.
    pub async fn apply(&self, new: LoadedConfig) -> Result<(), LocatedErrors> {
        let mut current = self.config.lock().await;
        let rules_cfg = rules_config(&new, self.gcp.as_ref(), &self.clock, &self.source_health)?;
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
        if new.config.tsdb_flush_interval != current.config.tsdb_flush_interval {
            tracing::warn!(
                old = %current.config.tsdb_flush_interval,
                new = %new.config.tsdb_flush_interval,
                "tsdb_flush_interval changes take effect only after a restart"
            );
        }
        if new.config.gcp != current.config.gcp {
            tracing::warn!(
                "gcp: changes (project, credentials, endpoints) take effect only after a restart"
            );
        }
        let c = &new.config;
        self.tsdb.set_retention_ms(c.retention.as_millis());
        self.probes.apply(&c.probes);
        if let Some(g) = &self.google {
            g.monitoring.apply(&c.cloud_monitoring);
            g.logging.apply(&c.cloud_logging);
            g.run.apply(&c.cloud_run);
        }
        if let Err(errors) = self.rules.apply(rules_cfg).await {
            tracing::error!(errors = %errors.join("; "), "some rule groups were not applied");
        }
        self.dispatcher.apply(&new);
        self.outbox.apply(NotifierConfig::from_loaded(&new));
        self.actions.apply(c);
        *self
            .rules_state
            .lags
            .write()
            .unwrap_or_else(|p| p.into_inner()) = adapters::metric_lags(c);
        self.request_counts.configured.store(
            TsdbRequestCounts::reads_requests(c),
            std::sync::atomic::Ordering::Relaxed,
        );
        *current = new;
        Ok(())
    }

    /// Reloads the config file the daemon was started with. A bad config is
    /// rejected with its errors and the running one stays.
    pub async fn reload(&self) -> Result<(), LocatedErrors> {
        let path = self.config.lock().await.path.clone();
        let loaded = load_config(&path).await?;
        self.apply(loaded).await
    }

    /// Stops the server and every task; returns within a few seconds.
    pub async fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        // Producers first, then the consumers that drain what they produced.
        self.probes.shutdown().await;
        if let Some(g) = &self.google {
            g.monitoring.shutdown().await;
            g.logging.shutdown().await;
            g.run.shutdown().await;
        }
        self.rules.shutdown().await;
        self.dispatcher.shutdown().await;
        self.actions.shutdown().await;
        self.outbox.shutdown().await;
        for task in self.tasks.lock().await.drain(..) {
            task.abort();
        }
        // Producers have stopped: what they wrote since the last WAL flush
        // goes to disk now, so a clean restart loses nothing.
        let tsdb = self.tsdb.clone();
        match tokio::task::spawn_blocking(move || tsdb.flush_wal()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "tsdb WAL flush at shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "tsdb WAL flush task failed"),
        }
        if let Some(handle) = self.server.lock().await.take() {
            // Graceful shutdown waits for open connections; do not wait forever.
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

fn external_url(config: &LoadedConfig) -> String {
    config
        .config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.config.listen))
        .trim_end_matches('/')
        .to_string()
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
    // Handlers first: once the listener is up, a SIGTERM (systemd stopping a
    // unit that is still starting) must stop cleanly, not kill the process.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let config = load_config(config_path).await?;
    let daemon = Daemon::start(config, Clock::system(), None).await?;
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let watchdog = spawn_watchdog();

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
