//! Routing tree, grouping and timing, silences, inhibition, time intervals (the dispatch issue).
//!
//! Wiring (daemon):
//! ```ignore
//! let dispatcher = Dispatcher::start(
//!     DispatcherDeps { clock, store, sink: outbox_sink, registry },
//!     &loaded_config,
//! ).await?;                                  // Arc<Dispatcher>; also an AlertSink for the rules
//! let api = server::dispatch_api::router(DispatchApiState {
//!     dispatcher: dispatcher.clone(),
//!     admin_token: AdminToken(loaded_config.admin_token.clone()),
//!     started_at_ms: clock.now_ms(),
//! });                                        // merge into the server's router
//! dispatcher.apply(&new_config);             // on SIGHUP, after validation
//! dispatcher.shutdown().await;               // on stop
//! ```

pub mod dispatcher;
pub mod external;
pub mod inhibit;
pub mod notification;
pub mod route;
pub mod silence;

pub use dispatcher::{
    AlertDispatchStatus, DispatchAlertView, DispatchError, Dispatcher, DispatcherDeps,
    ExternalUpdate, GroupView, Suppression, DEFAULT_RESOLVE_TIMEOUT,
};
pub use notification::{Notification, NotificationSink};
pub use silence::{SilenceError, SilenceInput, SilenceState};
