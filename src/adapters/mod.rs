//! Adapters: how one part of the daemon answers another's question without
//! depending on it. The traits live with the asker (`action::deps`,
//! `notify`, `rules`); the answers, which join the parts, live here and
//! nowhere else:
//!
//! - `actions`: what the action runner asks (whether an alert fires and how
//!   far back its evidence reaches, request counts, probes, mute windows,
//!   the audit's evidence),
//! - `cloud_run`: the Cloud Run source's serving history, and [`NoCloudRun`]
//!   for a daemon without a `gcp:` section,
//! - `notifications`: the dispatcher's sink ([`notification_channel`] and
//!   [`FanOut`]: the outbox, then the actions), the evidence notifications
//!   show, the history digest reports read,
//! - `rules`: Cloud Monitoring's PromQL endpoint as a rules query source.
//!
//! `daemon` builds them; `backtest` uses the same lags and request counts.

mod actions;
mod cloud_run;
mod notifications;
mod rules;

pub use actions::{
    metric_lags, DispatchIntervals, ExternalThenRules, LogAndProbeEvidence, RulesAlertState,
    TsdbRequestCounts,
};
pub use cloud_run::NoCloudRun;
pub use notifications::{
    notification_channel, FanOut, NotificationIntake, NotificationQueue, NotifyEvidence,
    StoredAlertHistory, StoredRollbacks,
};
pub use rules::GcpPromql;
