//! Sources produce samples: HTTP probes here; Cloud Monitoring, Cloud Logging and
//! Cloud Run status arrive with the Google issue.

pub mod probe;
