//! Cloud Logging v2 `entries.list` (in progress).

use serde_json::{json, Value};

use super::util::ApiError;
use crate::clock::TimestampMs;

#[derive(Default)]
pub(crate) struct LoggingState {
    pub ingest_delay_ms: i64,
}

impl LoggingState {
    pub fn list(&mut self, _now: TimestampMs, _body: &Value) -> Result<Value, ApiError> {
        Ok(json!({}))
    }
}
