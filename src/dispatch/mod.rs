//! Routing tree, grouping and timing, silences, inhibition, time intervals (the dispatch issue).

pub mod dispatcher;
pub mod inhibit;
pub mod matchers;
pub mod notification;
pub mod route;
pub mod silence;
pub mod time_interval;

pub use dispatcher::{
    AlertDispatchStatus, DispatchAlertView, DispatchError, Dispatcher, DispatcherDeps, GroupView,
    Suppression,
};
pub use notification::{Notification, NotificationSink};
pub use silence::{SilenceError, SilenceInput, SilenceState};
