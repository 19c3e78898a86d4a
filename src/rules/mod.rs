//! Prometheus rule files, the group evaluation loop, alert states and
//! templates. Rules read samples through a [`Querier`] (the local PromQL
//! engine, or a remote Prometheus-compatible API) and write recording rule
//! outputs and `ALERTS` through the tsdb's `SampleSink`.

pub mod alerting;
pub mod file;
pub mod group;
pub mod manager;
pub mod querier;
pub mod unittest;

pub use file::{
    check_files, load_rule_files, parse_rule_file, ParseOptions, Rule, RuleFile, RuleGroup,
    RuleKind,
};
pub use manager::{AlertHistory, FoundAlert, ManagerOptions, RuleManager, RulesConfig, RulesDeps};
pub use querier::{LocalQuerier, Querier, QueryError, RemoteQuerier};
