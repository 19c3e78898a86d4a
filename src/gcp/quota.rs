//! A shared limit on calls per rolling window (Cloud Logging allows 60
//! `entries.list` calls a minute per project, shared by every log query).
//! Every attempt, retries included, takes a slot; a 429 pauses everybody.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct CallQuota {
    inner: Arc<Mutex<QuotaState>>,
    limit: usize,
    window: Duration,
}

#[derive(Debug)]
struct QuotaState {
    /// Start times of the calls in the current window, oldest first.
    calls: VecDeque<Instant>,
    /// No call before this (after a 429).
    paused_until: Option<Instant>,
}

impl CallQuota {
    /// At most `limit` calls in any `window`.
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(QuotaState {
                calls: VecDeque::new(),
                paused_until: None,
            })),
            limit: limit.max(1),
            window,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Waits until a call may start, and counts it.
    pub async fn acquire(&self) {
        loop {
            let wait_until = {
                let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                while st
                    .calls
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    st.calls.pop_front();
                }
                match st.paused_until {
                    Some(p) if p > now => Some(p),
                    _ => {
                        if st.calls.len() < self.limit {
                            st.calls.push_back(now);
                            None
                        } else {
                            st.calls.front().map(|t| *t + self.window)
                        }
                    }
                }
            };
            match wait_until {
                None => return,
                Some(t) => tokio::time::sleep_until(t).await,
            }
        }
    }

    /// Nobody calls for `d` (Google answered 429).
    pub fn pause(&self, d: Duration) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + d;
        if st.paused_until.is_none_or(|p| p < until) {
            st.paused_until = Some(until);
        }
    }

    /// Calls started in the last window (tests, diagnostics).
    pub fn in_window(&self) -> usize {
        let st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        st.calls
            .iter()
            .filter(|t| now.duration_since(**t) < self.window)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_limit_per_window() {
        let q = CallQuota::new(3, Duration::from_secs(60));
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..7 {
            q.acquire().await;
            times.push(start.elapsed().as_secs());
        }
        assert_eq!(times, vec![0, 0, 0, 60, 60, 60, 120]);
        q.pause(Duration::from_secs(30));
        q.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(150));
    }
}

#[cfg(test)]
mod pause_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller() {
        let q = CallQuota::new(60, Duration::from_secs(60));
        q.acquire().await;
        q.pause(Duration::from_secs(20));
        let start = Instant::now();
        let (a, b) = tokio::join!(
            async {
                q.acquire().await;
                start.elapsed()
            },
            async {
                q.acquire().await;
                start.elapsed()
            }
        );
        assert!(
            a >= Duration::from_secs(20) && b >= Duration::from_secs(20),
            "{a:?} {b:?}"
        );
        assert_eq!(q.in_window(), 3);
    }
}
