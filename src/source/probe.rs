//! HTTP health probes: each on its own schedule, exported in blackbox_exporter's names.
//! (Skeleton: the probe engine is being written.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::probe::ProbeConfig;
use crate::store::Store;
use crate::tsdb::SampleSink;

/// What a probe manager needs from the rest of the daemon.
#[derive(Clone)]
pub struct ProbeDeps {
    pub clock: Clock,
    pub sink: Arc<dyn SampleSink>,
    pub store: Store,
    pub registry: prometheus::Registry,
}

/// Runs every configured probe; [`ProbeManager::apply`] swaps the set on reload.
pub struct ProbeManager {
    #[allow(dead_code)]
    deps: ProbeDeps,
    first_round_done: Arc<AtomicBool>,
}

impl ProbeManager {
    pub fn new(deps: ProbeDeps) -> Self {
        Self {
            deps,
            first_round_done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts new probes, stops removed ones, restarts changed ones; unchanged
    /// probes keep their schedule.
    pub fn apply(&self, probes: &[ProbeConfig]) {
        if probes.is_empty() {
            self.first_round_done.store(true, Ordering::SeqCst);
        }
    }

    /// True once every configured probe has run at least once.
    pub fn first_round_done(&self) -> bool {
        self.first_round_done.load(Ordering::SeqCst)
    }

    /// Stops every probe task.
    pub async fn shutdown(&self) {}
}
