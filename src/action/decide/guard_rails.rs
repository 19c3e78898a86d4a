//! The guard rails that limit how often a target is acted on, and the
//! re-check of the trigger alert, as pure decisions over facts read before.

use crate::clock::TimestampMs;

/// What the cooldown and the budget say about acting on a target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// Neither the cooldown nor the budget stops the action.
    Clear,
    /// The last action, at `last`, is within the cooldown.
    Cooldown { last: TimestampMs },
    /// `in_window` actions within the window already used up the budget.
    Budget { in_window: usize },
}

/// The cooldown and budget decision over the times of earlier actions on the
/// target (`runs`, any order), at `now`. The cooldown is checked first: an
/// action inside it is a cooldown skip even when the budget is also used up.
pub fn rate_limit(
    runs: &[TimestampMs],
    now: TimestampMs,
    cooldown_ms: i64,
    window_ms: i64,
    budget: usize,
) -> RateLimit {
    if let Some(last) = runs.iter().find(|t| **t >= now - cooldown_ms) {
        return RateLimit::Cooldown { last: *last };
    }
    let in_window = runs.iter().filter(|t| **t >= now - window_ms).count();
    if in_window >= budget {
        return RateLimit::Budget { in_window };
    }
    RateLimit::Clear
}

/// The earliest time the earlier actions must be read from to decide
/// [`rate_limit`] at `now`.
pub fn rate_limit_since(now: TimestampMs, cooldown_ms: i64, window_ms: i64) -> TimestampMs {
    now - cooldown_ms.max(window_ms)
}

/// What the trigger alert's state says just before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertRecheck {
    /// Still firing (or its state is unknown), from a rule that evaluates.
    Act,
    /// The alert resolved since it was sent.
    Resolved,
    /// The rule's last evaluation failed: an alert kept through a failing
    /// query is not evidence.
    RuleFailing { error: String },
}

/// The firing re-check from the alert's state (`is_firing`: `None` when the
/// rule manager does not know the alert) and its rule's last error.
pub fn alert_recheck(is_firing: Option<bool>, rule_error: Option<String>) -> AlertRecheck {
    if is_firing == Some(false) {
        return AlertRecheck::Resolved;
    }
    match rule_error {
        Some(error) => AlertRecheck::RuleFailing { error },
        None => AlertRecheck::Act,
    }
}

/// The first of an action's mute time intervals that is active, if any.
pub fn first_muted(intervals: &[String], is_active: impl Fn(&str) -> bool) -> Option<&String> {
    intervals.iter().find(|ti| is_active(ti))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn no_earlier_actions_is_clear() {
        assert_eq!(
            rate_limit(&[], 100 * MIN, 10 * MIN, 60 * MIN, 1),
            RateLimit::Clear
        );
    }

    #[test]
    fn an_action_inside_the_cooldown_stops_it() {
        let now = 100 * MIN;
        let runs = [now - 5 * MIN];
        assert_eq!(
            rate_limit(&runs, now, 10 * MIN, 60 * MIN, 3),
            RateLimit::Cooldown {
                last: now - 5 * MIN
            }
        );
    }

    #[test]
    fn the_cooldown_boundary_is_inclusive() {
        let now = 100 * MIN;
        assert_eq!(
            rate_limit(&[now - 10 * MIN], now, 10 * MIN, 60 * MIN, 3),
            RateLimit::Cooldown {
                last: now - 10 * MIN
            }
        );
        assert_eq!(
            rate_limit(&[now - 10 * MIN - 1], now, 10 * MIN, 60 * MIN, 3),
            RateLimit::Clear
        );
    }

    #[test]
    fn a_used_up_budget_stops_it_after_the_cooldown() {
        let now = 100 * MIN;
        let runs = [now - 20 * MIN, now - 40 * MIN];
        assert_eq!(
            rate_limit(&runs, now, 10 * MIN, 60 * MIN, 2),
            RateLimit::Budget { in_window: 2 }
        );
        assert_eq!(
            rate_limit(&runs, now, 10 * MIN, 60 * MIN, 3),
            RateLimit::Clear
        );
    }

    #[test]
    fn actions_before_the_window_do_not_count() {
        let now = 100 * MIN;
        let runs = [now - 20 * MIN, now - 61 * MIN];
        assert_eq!(
            rate_limit(&runs, now, 10 * MIN, 60 * MIN, 2),
            RateLimit::Clear
        );
    }

    #[test]
    fn the_cooldown_wins_over_the_budget() {
        let now = 100 * MIN;
        let runs = [now - MIN, now - 2 * MIN];
        assert_eq!(
            rate_limit(&runs, now, 10 * MIN, 60 * MIN, 1),
            RateLimit::Cooldown { last: now - MIN }
        );
    }

    #[test]
    fn actions_are_read_from_the_longer_of_cooldown_and_window() {
        assert_eq!(rate_limit_since(100 * MIN, 10 * MIN, 60 * MIN), 40 * MIN);
        assert_eq!(rate_limit_since(100 * MIN, 90 * MIN, 60 * MIN), 10 * MIN);
    }

    #[test]
    fn a_resolved_alert_is_not_acted_on() {
        assert_eq!(alert_recheck(Some(false), None), AlertRecheck::Resolved);
        // Resolved wins over a failing rule: nothing to act on either way.
        assert_eq!(
            alert_recheck(Some(false), Some("timeout".into())),
            AlertRecheck::Resolved
        );
    }

    #[test]
    fn an_alert_kept_through_a_failing_rule_is_inconclusive() {
        assert_eq!(
            alert_recheck(Some(true), Some("timeout".into())),
            AlertRecheck::RuleFailing {
                error: "timeout".into()
            }
        );
        assert_eq!(
            alert_recheck(None, Some("timeout".into())),
            AlertRecheck::RuleFailing {
                error: "timeout".into()
            }
        );
    }

    #[test]
    fn a_firing_or_unknown_alert_is_acted_on() {
        assert_eq!(alert_recheck(Some(true), None), AlertRecheck::Act);
        assert_eq!(alert_recheck(None, None), AlertRecheck::Act);
    }

    #[test]
    fn the_first_active_mute_interval_mutes() {
        let intervals = vec!["weekends".to_string(), "freeze".to_string()];
        assert_eq!(
            first_muted(&intervals, |n| n == "freeze"),
            Some(&"freeze".to_string())
        );
        assert_eq!(first_muted(&intervals, |_| false), None);
        assert_eq!(first_muted(&[], |_| true), None);
    }
}
