//! What dispatch hands to the effects: one notification for one receiver and
//! one alert group. The daemon fans it out to the receiver's integrations
//! (email and webhook through the notify outbox, rollback_configs to actions).

use std::future::Future;
use std::pin::Pin;

use crate::alert::{Alert, AlertStatus};
use crate::clock::TimestampMs;
use crate::labels::Labels;

#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub receiver: String,
    /// Alertmanager's group key: the route's path plus the group labels, e.g. `{}/{severity="critical"}:{alertname="X"}`.
    pub group_key: String,
    pub group_labels: Labels,
    /// Firing and (for `send_resolved`) resolved alerts of the group, as of `created_at_ms`.
    pub alerts: Vec<Alert>,
    pub created_at_ms: TimestampMs,
}

impl Notification {
    /// `firing` while any alert in it fires, else `resolved`.
    pub fn status(&self) -> AlertStatus {
        AlertStatus::of_group(self.alerts.iter().map(|a| a.status_at(self.created_at_ms)))
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where dispatch sends notifications. Implementations persist before returning
/// (the outbox), so a notification accepted here survives a restart.
pub trait NotificationSink: Send + Sync {
    fn send<'a>(&'a self, notification: Notification) -> BoxFuture<'a, Result<(), String>>;
}
