//! rearguard: watches a deployed service, judges it with Prometheus alerting
//! rules, tells people, and rolls back a bad deploy.
//!
//! Data flows one way (see DESIGN.md): `source` → `tsdb` → `rules` (via
//! `promql`) → `dispatch` → `notify` / `action`. `store` keeps what must
//! survive a restart; `server` exposes metrics and the admin API.

pub mod action;
pub mod adapters;
pub mod alert;
pub mod backtest;
pub mod cli;
/// The clock lives in its own crate so the simulator can share it without
/// depending on the library; `rearguard::clock::...` paths keep working.
pub use rearguard_clock as clock;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod duration;
pub mod gcp;
pub mod labels;
pub mod logging;
pub mod matchers;
pub mod notify;
pub mod promql;
pub mod rules;
pub mod server;
pub mod source;
pub mod store;
pub mod template;
pub mod time_interval;
pub mod tls;
pub mod tsdb;
