//! Fakes of Google's APIs (token, Cloud Run, Monitoring, Logging) and a simulated
//! service, for tests and `rearguard demo` (the Google issue).
//!
//! One axum server on `127.0.0.1:0` serves every API under its discovery-document
//! path, so one base URL stands in for `run`, `monitoring` and `logging`
//! endpoints and for `GCE_METADATA_HOST`. Everything runs on the shared
//! [`Clock`](crate::clock::Clock): under tokio's paused time a scenario of
//! minutes runs in milliseconds.
//!
//! Start with [`FakeGcp::start`]; drive it through its control methods
//! (create services, deploy revisions, add points and log entries, inject
//! faults) and read what clients did through [`FakeGcp::calls`].

pub mod auth;
pub mod calls;
pub mod discovery;
pub mod faults;
pub mod logging;
pub mod monitoring;
pub mod run;
pub mod scenario;
mod server;
pub mod service;
mod util;

pub use calls::Call;
pub use faults::{Fault, FaultKind};
pub use logging::LogEntrySpec;
pub use monitoring::{BucketOptions, Distribution, MetricKind, PointValue, SeriesSpec};
pub use run::{DeploySpec, RevisionBehaviour, ServiceSpec};
pub use server::{methods, FakeGcp, FakeOptions};
pub use util::ApiError;
