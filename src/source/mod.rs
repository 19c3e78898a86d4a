//! Sources produce samples: HTTP probes, Cloud Monitoring, Cloud Logging and
//! Cloud Run status.

pub mod cloud_logging;
pub mod cloud_monitoring;
pub mod cloud_run;
pub mod health;
pub mod poll;
pub mod probe;
