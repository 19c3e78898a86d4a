//! The one poll loop of the Google sources (Cloud Monitoring, Cloud Logging,
//! Cloud Run): every config entry is a task that loads its persisted state,
//! then polls on its interval under the deadline of [`PollTracker`] (which
//! writes `rearguard_source_up`), until a reload or shutdown stops it. Each
//! source keeps only what is its own: how it loads and what one poll does
//! ([`PolledSource`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::gcp::tasks::{sleep_or_stop, TaskSet};
use crate::gcp::{GcpContext, GcpError};
use crate::source::health::{PollTracker, SourceHealth};
use crate::store::Store;
use crate::tsdb::SampleSink;

/// What the Google sources need from the rest of the daemon.
#[derive(Clone)]
pub struct GcpSourceDeps {
    pub clock: Clock,
    pub sink: Arc<dyn SampleSink>,
    pub store: Store,
}

/// One kind of Google source, as the poll loop sees it.
pub trait PolledSource: Sized + Send + 'static {
    /// One config entry.
    type Config: Clone + PartialEq + Send + Sync + 'static;
    /// What every entry of the kind shares with the rest of the daemon (the
    /// log evidence, the Cloud Run views), `()` when nothing.
    type Shared: Clone + Default + Send + Sync + 'static;
    /// What one successful poll returns.
    type Polled: Send;

    /// The `kind` label of `rearguard_source_up`.
    const KIND: &'static str;

    /// The entry's name: its task's key and the `name` label of `rearguard_source_up`.
    fn name(cfg: &Self::Config) -> &str;

    fn interval(cfg: &Self::Config) -> Duration;

    /// Builds the source from its persisted state.
    fn load(
        cfg: Self::Config,
        ctx: GcpContext,
        deps: GcpSourceDeps,
        shared: Self::Shared,
    ) -> impl Future<Output = Self> + Send;

    fn poll_once(&mut self) -> impl Future<Output = Result<Self::Polled, GcpError>> + Send;

    /// Drops what `shared` keeps for entries no longer configured (`names`).
    fn retain(_shared: &Self::Shared, _names: &[String]) {}
}

/// Runs every entry of one kind of source; [`SourcePolls::apply`] changes the
/// set on reload.
pub struct SourcePolls<S: PolledSource> {
    ctx: GcpContext,
    deps: GcpSourceDeps,
    shared: S::Shared,
    tasks: TaskSet<S::Config>,
    /// Where `rearguard_source_up` goes (nowhere by default).
    health: SourceHealth,
}

impl<S: PolledSource> SourcePolls<S> {
    pub fn new(ctx: GcpContext, deps: GcpSourceDeps) -> Self {
        Self {
            ctx,
            deps,
            shared: S::Shared::default(),
            tasks: TaskSet::default(),
            health: SourceHealth::default(),
        }
    }

    /// Reports `rearguard_source_up{kind=S::KIND}` of each entry to `health`.
    pub fn with_health(mut self, health: SourceHealth) -> Self {
        self.health = health;
        self
    }

    pub fn shared(&self) -> &S::Shared {
        &self.shared
    }

    pub fn context(&self) -> &GcpContext {
        &self.ctx
    }

    /// Starts new entries, restarts changed ones, stops removed ones.
    pub fn apply(&self, entries: &[S::Config]) {
        let names: Vec<String> = entries.iter().map(|e| S::name(e).to_string()).collect();
        S::retain(&self.shared, &names);
        let (ctx, deps, shared, health) = (
            self.ctx.clone(),
            self.deps.clone(),
            self.shared.clone(),
            self.health.clone(),
        );
        self.tasks.apply(
            names.into_iter().zip(entries.iter().cloned()).collect(),
            move |cfg, stop| {
                poll_until_stopped::<S>(
                    cfg,
                    ctx.clone(),
                    deps.clone(),
                    shared.clone(),
                    health.clone(),
                    stop,
                )
            },
        );
    }

    pub fn names(&self) -> Vec<String> {
        self.tasks.names()
    }

    pub async fn shutdown(&self) {
        self.tasks.shutdown().await
    }
}

/// One entry's task: load, then poll every interval until told to stop.
async fn poll_until_stopped<S: PolledSource>(
    cfg: S::Config,
    ctx: GcpContext,
    deps: GcpSourceDeps,
    shared: S::Shared,
    health: SourceHealth,
    mut stop: watch::Receiver<bool>,
) {
    let interval = S::interval(&cfg);
    let mut tracker = PollTracker::new(
        S::KIND,
        S::name(&cfg).to_string(),
        interval,
        deps.clock.clone(),
        health,
    );
    let mut source = S::load(cfg, ctx, deps, shared).await;
    loop {
        tracker.poll(source.poll_once()).await;
        if sleep_or_stop(interval, &mut stop).await {
            break;
        }
    }
}
