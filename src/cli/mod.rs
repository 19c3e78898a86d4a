//! Subcommands that read files or talk to a running daemon. The binary
//! (`src/bin/rearguard/main.rs`) parses arguments; `demo` is its own (it needs
//! the simulator).

pub mod alerts;
pub mod backtest;
pub mod check;
pub mod completions;
pub mod history;
pub mod hold;
pub mod probes;
pub mod query;
pub mod rollback;
pub mod silence;
pub mod test_rules;
