//! Actions: what a receiver's `rollback_configs` runs when a critical alert
//! holds. Cloud Run traffic back to the last good revision, a feature-flag
//! env revert, a command, or a ladder of them; behind guard rails (dry run,
//! holds, mute windows, cooldown, budget, bake window, quarantine), written
//! to the store as an intent before acting (exactly once), verified, audited
//! and announced through the alert pipeline.

pub mod cloud_run;
pub mod command;
pub mod decide;
pub mod deps;
pub mod events;
mod gcp_adapter;
pub mod journal;
pub mod metrics;
mod runner;

pub use decide::{judge, plan};

pub use cloud_run::{
    CloudRunApi, CloudRunError, RevisionState, ServicePatch, ServiceState, TrafficTarget,
};
pub use deps::{
    AlertState, EvidenceSource, ProbeCheck, RequestCount, RequestCounts, ServingHistory,
    ServingPeriod, TimeIntervals, Unknown,
};
pub use events::{is_own_alert, EVENT_ALERTNAME};
pub use runner::{reason, ActionDeps, ActionRunner, Outcome, Trigger};
