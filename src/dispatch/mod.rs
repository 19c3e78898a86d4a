//! Routing tree, grouping and timing, silences, inhibition, time intervals (the dispatch issue).

pub mod notification;

pub use notification::{Notification, NotificationSink};
