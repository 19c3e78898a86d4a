//! Email and webhook notifications through a durable outbox, and digest reports.
//!
//! Dispatch hands [`Notification`](crate::dispatch::Notification)s to the
//! [`Outbox`] (it implements `NotificationSink`); the outbox writes one row
//! per email/webhook integration of the receiver and its workers deliver them.
//!
//! What receivers see, beyond Alertmanager:
//! - Webhook payload (version 4): every alert also carries `value`, the
//!   expression's value as a string in Prometheus's float format (`"0.071"`,
//!   `"NaN"`, `"+Inf"`); for a resolved alert it is the value at resolution.
//!   Receivers written for Alertmanager ignore the extra field.
//! - Webhook signature: with `hmac_secret_file`, `X-Rearguard-Signature:
//!   sha256=<hex HMAC-SHA256 of the exact body>`.
//! - Email: the default subject is Alertmanager's (`[FIRING:2] <group labels>
//!   (<other common labels>)`); the text and HTML bodies list every alert of
//!   the group (firing first) with severity, service, value, since when,
//!   summary, description, labels, a link `<external_url>/api/v1/alerts?fingerprint=<16 hex>`,
//!   and evidence: the last log entries of the `cloud_logging` query named by
//!   the annotation `evidence_log_query` or the label `query`, and the state of
//!   the probe named by the annotation `evidence_probe` or the label `probe`.
//! - Custom `html`/`text`/header templates use the rule templates' Go
//!   text/template engine ([`crate::template`]) over Alertmanager's template data.
//!
//! Delivery is at least once: a message the server accepted just before a
//! crash (before its row was marked delivered) is sent again after the restart.
//! A row marked delivered is never sent again.

pub mod email;
pub mod evidence;
pub mod metrics;
pub mod outbox;
pub mod payload;
pub mod report;
pub mod webhook;

pub use evidence::{EvidenceSource, LogEvidence, NoEvidence, ProbeEvidence, SharedEvidence};
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
