//! The action metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct ActionMetrics {
    /// result: verified, not_verified, failed, superseded, dry_run.
    pub rollbacks: IntCounterVec,
    pub duration: HistogramVec,
    pub skipped: IntCounterVec,
    pub held: IntGaugeVec,
}

impl ActionMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let rollbacks = IntCounterVec::new(
            Opts::new(
                "rearguard_rollbacks_total",
                "Actions run, by target and result.",
            ),
            &["target", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "rearguard_rollback_duration_seconds",
                "Time from the decision to act until the action was verified or given up.",
            )
            .buckets(vec![
                5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
            ]),
            &["target"],
        )?;
        let skipped = IntCounterVec::new(
            Opts::new(
                "rearguard_rollback_skipped_total",
                "Actions not taken, by target and the guard rail that stopped them.",
            ),
            &["target", "reason"],
        )?;
        let held = IntGaugeVec::new(
            Opts::new(
                "rearguard_target_held",
                "1 while a target is on hold (no automatic action).",
            ),
            &["target"],
        )?;
        registry.register(Box::new(rollbacks.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        registry.register(Box::new(held.clone()))?;
        Ok(Self {
            rollbacks,
            duration,
            skipped,
            held,
        })
    }
}
