//! The notifier's metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct NotifyMetrics {
    /// Delivery attempts by result: `success` or `failure`.
    pub notifications: IntCounterVec,
    pub queue_depth: IntGauge,
    /// From the notification's creation to its delivery.
    pub latency: HistogramVec,
    pub dead_lettered: IntCounterVec,
}

impl NotifyMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.notifications.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        Ok(m)
    }

    /// Metrics that no registry exports (tools and tests that do not scrape).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            notifications: IntCounterVec::new(
                Opts::new(
                    "rearguard_notifications_total",
                    "Notification delivery attempts, by receiver, integration (email, webhook) and result (success, failure).",
                ),
                &["receiver", "integration", "result"],
            )?,
            queue_depth: IntGauge::new(
                "rearguard_notification_queue_depth",
                "Notifications in the outbox waiting for delivery (one per integration).",
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "rearguard_notification_latency_seconds",
                    "Time from a notification's creation to its delivery, including retries.",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0]),
                &["integration"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "rearguard_notifications_dead_lettered_total",
                    "Notifications given up on (permanent error, or older than the outbox's maximum age).",
                ),
                &["receiver", "integration"],
            )?,
        })
    }
}
