//! Fault injection per API method: errors with `Retry-After`, slow answers,
//! malformed and truncated JSON.

use std::time::Duration;

/// What goes wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer with this HTTP status and Google's error body for it
    /// (429 → `RESOURCE_EXHAUSTED`, 500 → `INTERNAL`, 503 → `UNAVAILABLE`, ...),
    /// with a `Retry-After: <secs>` header when given.
    Status {
        code: u16,
        retry_after_secs: Option<u64>,
    },
    /// Answer 429 `RESOURCE_EXHAUSTED` with no `Retry-After` header and the
    /// wait only in the body, as `google.rpc.RetryInfo.retryDelay` next to an
    /// `ErrorInfo` (how Google's quota errors look: AIP-193 and
    /// https://cloud.google.com/apis/design/errors#retryinfo).
    RetryInfo { retry_delay_ms: i64 },
    /// Wait this long (on tokio's clock) before answering normally.
    Delay(Duration),
    /// Answer 200 with a body that is not JSON.
    MalformedJson,
    /// Answer 200 with the real body cut in half.
    TruncatedJson,
    /// Carry the call out, then lose its answer: the client gets this status
    /// (a 502/503/504 from Google's front end, or a reset it sees as one)
    /// although the change was made. `services.patch` is not idempotent
    /// (AIP-134 makes no such promise for Update), so a client must re-read
    /// before sending it again.
    AnswerLost { code: u16 },
}

/// A fault rule: which calls it hits, how many times.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// A discovery method id (`run.projects.locations.services.patch`), a
    /// prefix ending in `*` (`run.*`, `logging.*`), or `*` for every call.
    pub method: String,
    pub kind: FaultKind,
    /// How many calls it hits; `None` = until cleared.
    pub times: Option<u32>,
    /// Calls to let through before it starts hitting.
    pub skip: u32,
}

impl Fault {
    pub fn new(method: impl Into<String>, kind: FaultKind) -> Self {
        Self {
            method: method.into(),
            kind,
            times: None,
            skip: 0,
        }
    }
    /// Hits only the next `n` matching calls.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    /// Lets `n` matching calls through first.
    pub fn after(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }
    /// `429 RESOURCE_EXHAUSTED` with `Retry-After`.
    pub fn rate_limited(method: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(
            method,
            FaultKind::Status {
                code: 429,
                retry_after_secs: Some(retry_after_secs),
            },
        )
    }
    /// `429 RESOURCE_EXHAUSTED` whose only hint is `RetryInfo.retryDelay` in the body.
    pub fn rate_limited_retry_info(method: impl Into<String>, retry_delay: Duration) -> Self {
        Self::new(
            method,
            FaultKind::RetryInfo {
                retry_delay_ms: retry_delay.as_millis() as i64,
            },
        )
    }
    /// Carries the call out and answers `code` instead of its result.
    pub fn answer_lost(method: impl Into<String>, code: u16) -> Self {
        Self::new(method, FaultKind::AnswerLost { code })
    }
    pub fn status(method: impl Into<String>, code: u16) -> Self {
        Self::new(
            method,
            FaultKind::Status {
                code,
                retry_after_secs: None,
            },
        )
    }

    pub(crate) fn matches(&self, method: &str) -> bool {
        if self.method == "*" {
            return true;
        }
        match self.method.strip_suffix('*') {
            Some(prefix) => method.starts_with(prefix),
            None => self.method == method,
        }
    }
}

/// The Google status name for an HTTP code, as its error bodies carry it.
pub fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

#[derive(Default)]
pub(crate) struct Faults {
    rules: Vec<Fault>,
}

impl Faults {
    pub fn add(&mut self, f: Fault) {
        self.rules.push(f);
    }
    pub fn clear(&mut self) {
        self.rules.clear();
    }
    /// The fault that hits this call, consuming one use of it.
    pub fn take(&mut self, method: &str) -> Option<FaultKind> {
        let mut hit = None;
        for rule in self.rules.iter_mut().filter(|r| r.matches(method)) {
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            if hit.is_none() {
                if let Some(t) = rule.times.as_mut() {
                    *t -= 1;
                }
                hit = Some(rule.kind.clone());
            }
        }
        self.rules.retain(|r| r.times != Some(0));
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_fault_hits_then_expires() {
        let mut f = Faults::default();
        f.add(Fault::status("run.*", 503).times(2).after(1));
        assert_eq!(f.take("logging.entries.list"), None);
        assert_eq!(f.take("run.projects.locations.services.get"), None);
        assert!(f.take("run.projects.locations.services.get").is_some());
        assert!(f.take("run.projects.locations.services.patch").is_some());
        assert_eq!(f.take("run.projects.locations.services.get"), None);
    }
}
