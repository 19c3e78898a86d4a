//! `rearguard backtest`: what rearguard would have done over a past window.
//!
//! The data flows one way: [`history`] reads the window from Google through
//! the live clients and conversions; [`replay`] steps the real rule groups
//! over it on a simulated clock and asks the real action decisions
//! (`action::decide`) with facts rebuilt from the recorded history; [`report`]
//! prints the timeline. The replay holds no store, no notifier and no Cloud
//! Run client: it cannot change anything, whatever the config says.

pub mod history;
pub mod replay;
pub mod report;

pub use history::{History, ServiceHistory};
pub use replay::{
    replay, ActionDecision, AlertEvent, DecisionKind, DeployOutcome, Event, NotReplayable,
    ReplayOptions, ReplayResult,
};
