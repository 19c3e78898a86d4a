//! Subcommands that read files or talk to a running daemon. `main.rs` only parses arguments.

pub mod alerts;
pub mod backtest;
pub mod check;
pub mod completions;
pub mod demo;
pub mod history;
pub mod hold;
pub mod probes;
pub mod query;
pub mod rollback;
pub mod silence;
pub mod test_rules;
