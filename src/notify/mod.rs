//! Email and webhook notifications through a durable outbox, and digest reports.
//!
//! Dispatch hands [`Notification`](crate::dispatch::Notification)s to the
//! [`Outbox`] (it implements `NotificationSink`); the outbox writes one row
//! per email/webhook integration of the receiver and its workers deliver them.

pub mod email;
pub mod evidence;
pub mod metrics;
pub mod outbox;
pub mod payload;
pub mod report;
pub mod template;
pub mod webhook;

pub use evidence::{EvidenceSource, LogEvidence, NoEvidence, ProbeEvidence};
pub use outbox::{NotifierConfig, Outbox, OutboxError, OutboxOptions, OutboxStartError};

/// A failed delivery: permanent ones are dead-lettered at once, others retried.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub permanent: bool,
    pub message: String,
}

impl DeliveryError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            message: message.into(),
        }
    }
}
