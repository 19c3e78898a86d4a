//! Fakes of Google's APIs (token, Cloud Run, Monitoring, Logging) and a simulated
//! service, for tests and `rearguard demo` (the Google issue).
//!
//! One axum server on `127.0.0.1:0` serves every API under its discovery-document
//! path, so one base URL stands in for `run`, `monitoring` and `logging`
//! endpoints and for `GCE_METADATA_HOST`. Everything runs on the shared
//! [`Clock`](rearguard_clock::Clock): under tokio's paused time a scenario of
//! minutes runs in milliseconds.
//!
//! Start with [`FakeGcp::start`]; drive it through its control methods
//! (create services, deploy revisions, add points and log entries, inject
//! faults) and read what clients did through [`FakeGcp::calls`].
//!
//! ```text
//! GET   /computeMetadata/v1/instance/service-accounts/default/token   metadata.token (Metadata-Flavor: Google)
//! GET   /computeMetadata/v1/instance/service-accounts/default/email   metadata.email
//! GET   /computeMetadata/v1/universe/universe-domain                  metadata.universeDomain
//! GET   /computeMetadata/v1/project/project-id                        metadata.projectId
//! POST  /token                                                        oauth2.token (jwt-bearer, refresh_token)
//! GET   /v2/projects/P/locations/L/services                           run.projects.locations.services.list
//! GET   /v2/projects/P/locations/L/services/S                         run.projects.locations.services.get
//! PATCH /v2/projects/P/locations/L/services/S                         run.projects.locations.services.patch
//! GET   /v2/projects/P/locations/L/services/S/revisions               run.projects.locations.services.revisions.list
//! GET   /v2/projects/P/locations/L/services/S/revisions/R             run.projects.locations.services.revisions.get
//! GET   /v2/projects/P/locations/L/operations/O                       run.projects.locations.operations.get
//! POST  /v2/projects/P/locations/L/operations/O:wait                  run.projects.locations.operations.wait
//! GET   /v3/projects/P/timeSeries                                     monitoring.projects.timeSeries.list
//! POST  /v2/entries:list                                              logging.entries.list
//! GET|POST /v1/projects/P/location/global/prometheus/api/v1/query[_range]  (canned answers)
//! /sim/...                                                            admin routes (see `admin`)
//! ```
//!
//! Faithfulness notes: `generation`, `observedGeneration`, `int64Value`,
//! distribution `count`/`bucketCounts` are JSON strings; default-valued fields
//! are omitted (log `severity` DEFAULT, empty lists and label maps, trailing
//! zero bucket counts); `timeSeries.list` points are newest first and visible
//! only after the monitoring delay; a services.patch with a stale `etag` gets
//! 409 `ABORTED`; `entries.list` is limited to 60 calls a minute per project.

mod admin;
pub mod audit;
pub mod auth;
pub mod calls;
pub mod discovery;
pub mod faults;
pub mod history;
pub mod logging;
pub mod monitoring;
pub mod run;
pub mod scenario;
mod server;
pub mod service;
pub mod sinks;
mod util;

pub use calls::Call;
pub use faults::{Fault, FaultKind};
pub use logging::LogEntrySpec;
pub use monitoring::{BucketOptions, Distribution, MetricKind, PointValue, SeriesSpec};
pub use run::{DeploySpec, RevisionBehaviour, ServiceSpec};
pub use server::{methods, FakeGcp, FakeOptions};
pub use util::ApiError;
