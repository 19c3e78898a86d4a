//! One clock for every component.
//!
//! Wall time is derived from tokio's monotonic clock plus the wall time at
//! construction. Under `tokio::time::pause()` (tests, simulated scenarios) both
//! sleeping and `now_ms()` advance together, so a whole `for: 10m` scenario runs
//! in milliseconds of real time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use tokio::time::Instant;

/// Milliseconds since the Unix epoch.
pub type TimestampMs = i64;

#[derive(Clone, Debug)]
pub struct Clock {
    base_wall_ms: TimestampMs,
    base: Instant,
}

impl Clock {
    /// A clock that reads the system wall time now and advances with tokio's clock.
    pub fn system() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self::starting_at(wall)
    }

    /// A clock whose wall time is `wall_ms` at this instant of tokio's clock.
    pub fn starting_at(wall_ms: TimestampMs) -> Self {
        Self {
            base_wall_ms: wall_ms,
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> TimestampMs {
        self.base_wall_ms + self.base.elapsed().as_millis() as i64
    }

    pub fn now(&self) -> DateTime<Utc> {
        to_datetime(self.now_ms())
    }

    /// The tokio instant at which this clock shows `wall_ms`.
    pub fn instant_at(&self, wall_ms: TimestampMs) -> Instant {
        let delta = wall_ms - self.base_wall_ms;
        if delta <= 0 {
            self.base
        } else {
            self.base + Duration::from_millis(delta as u64)
        }
    }

    /// Sleeps until the clock shows `wall_ms` (returns at once if it already has).
    pub async fn sleep_until_ms(&self, wall_ms: TimestampMs) {
        tokio::time::sleep_until(self.instant_at(wall_ms)).await
    }
}

pub fn to_datetime(ms: TimestampMs) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_advances_wall_clock() {
        let clock = Clock::starting_at(1_000_000);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(clock.now_ms(), 1_000_000 + 600_000);
        clock.sleep_until_ms(1_000_000 + 900_000).await;
        assert_eq!(clock.now_ms(), 1_900_000);
    }
}
