//! The call log: every request the fake received, so tests can assert what a
//! client did ("exactly one services.patch, with the etag it had read").

use serde_json::Value;

use rearguard_clock::TimestampMs;

/// One request to the fake, as it arrived and as it was answered.
#[derive(Clone, Debug)]
pub struct Call {
    /// Clock time of arrival.
    pub at_ms: TimestampMs,
    /// The discovery method id, e.g. `run.projects.locations.services.patch`,
    /// `monitoring.projects.timeSeries.list`, `logging.entries.list`,
    /// `metadata.token`, `oauth2.token`; `unknown` for unrouted paths.
    pub method: String,
    /// HTTP method, e.g. `PATCH`.
    pub http_method: String,
    /// The path, e.g. `/v2/projects/p/locations/l/services/s`.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
    /// The request body parsed as JSON (`None` when empty or not JSON).
    pub body: Option<Value>,
    /// `etag` from a JSON request body, when it had one (services.patch).
    pub etag: Option<String>,
    /// Whether an `Authorization` header came with the request.
    pub authorized: bool,
    /// HTTP status of the answer (0 while the request is still in flight).
    pub status: u16,
    /// The fault injected into this call, if any (its `Debug` form).
    pub fault: Option<String>,
}

impl Call {
    /// A query parameter by name (first occurrence).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
