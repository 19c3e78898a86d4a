//! PromQL evaluation over the tsdb (parsing is promql-parser's), the series
//! notation of Prometheus test files, and the test-script runner.

mod aggregate;
pub mod engine;
mod functions;
mod label_ops;
pub mod limits;
pub mod notation;
pub(crate) mod quoting;
pub mod script;
pub mod value;

pub use engine::{parse, Engine, EngineOptions, QueryError};
pub use value::{format_value, InstantSample, QueryResult, RangeSeries, Value};

#[cfg(test)]
mod tests;
