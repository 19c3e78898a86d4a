//! Google Cloud: credentials and the one request path every Google API call
//! takes (timeout, retries with backoff and jitter, typed errors, metrics),
//! and typed clients for Cloud Run v2, Cloud Monitoring v3, Cloud Logging v2
//! and Cloud Monitoring's Prometheus-compatible query API.

pub mod audit;
pub mod auth;
pub mod client;
pub mod context;
pub mod double;
pub mod error;
pub mod int64;
pub mod logging;
pub mod monitoring;
pub mod paging;
pub mod promql;
pub mod quota;
pub mod run;
pub mod tasks;

pub use auth::{CredentialSpec, TokenSource, CLOUD_PLATFORM_SCOPE};
pub use client::{GcpClient, Request, RetryPolicy, UpstreamMetrics};
pub use context::GcpContext;
pub use error::GcpError;
pub use logging::LoggingClient;
pub use monitoring::MonitoringClient;
pub use promql::PromqlClient;
pub use quota::CallQuota;
pub use run::CloudRunClient;
