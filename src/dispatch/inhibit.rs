//! Inhibition, as Alertmanager does it: a firing alert that matches a rule's
//! `source_matchers` mutes every alert that matches its `target_matchers` and
//! has the same values (a missing label counts as "") for every label in
//! `equal`. An alert never inhibits itself: when the target also matches the
//! source side, sources that also match the target side are ignored.
//! Silenced source alerts still inhibit.

use crate::config::routing::InhibitRuleConfig;
use crate::labels::Labels;

use crate::matchers::Matchers;

#[derive(Clone, Debug)]
pub struct InhibitRule {
    pub source: Matchers,
    pub target: Matchers,
    pub equal: Vec<String>,
}

impl InhibitRule {
    /// `None` when a matcher does not parse (validation reports it).
    pub fn from_config(c: &InhibitRuleConfig) -> Option<Self> {
        Some(Self {
            source: c.all_source_matchers().ok()?,
            target: c.all_target_matchers().ok()?,
            equal: c.equal.clone(),
        })
    }
}

/// The fingerprint of the first firing alert in `firing` that inhibits `target`, if any.
/// `firing` holds (fingerprint, labels) of every alert firing now.
pub fn inhibited_by<'a>(
    rules: &[InhibitRule],
    target: &Labels,
    firing: impl Iterator<Item = (u64, &'a Labels)> + Clone,
) -> Option<u64> {
    for rule in rules {
        if !rule.target.matches(target) {
            continue;
        }
        let exclude_two_sided = rule.source.matches(target);
        for (fp, source) in firing.clone() {
            if !rule.source.matches(source) {
                continue;
            }
            if rule
                .equal
                .iter()
                .any(|n| source.get(n).unwrap_or("") != target.get(n).unwrap_or(""))
            {
                continue;
            }
            if exclude_two_sided && rule.target.matches(source) {
                continue;
            }
            return Some(fp);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(src: &str, tgt: &str, equal: &[&str]) -> InhibitRule {
        InhibitRule {
            source: crate::matchers::parse_matchers(src).unwrap(),
            target: crate::matchers::parse_matchers(tgt).unwrap(),
            equal: equal.iter().map(|s| s.to_string()).collect(),
        }
    }
    fn l(p: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(p.iter().copied())
    }

    #[test]
    fn critical_inhibits_warning_with_equal_labels() {
        let rules = [rule(
            r#"severity="critical""#,
            r#"severity="warning""#,
            &["service"],
        )];
        let crit = l(&[
            ("alertname", "Down"),
            ("severity", "critical"),
            ("service", "a"),
        ]);
        let firing = [(crit.fingerprint(), &crit)];
        let warn_a = l(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("service", "a"),
        ]);
        let warn_b = l(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("service", "b"),
        ]);
        assert_eq!(
            inhibited_by(&rules, &warn_a, firing.iter().map(|(f, l)| (*f, *l))),
            Some(crit.fingerprint())
        );
        assert_eq!(
            inhibited_by(&rules, &warn_b, firing.iter().map(|(f, l)| (*f, *l))),
            None
        );
        // Both lack `service`: "" == "" counts as equal.
        let crit_nosvc = l(&[("alertname", "Down"), ("severity", "critical")]);
        let warn_nosvc = l(&[("alertname", "Slow"), ("severity", "warning")]);
        let firing = [(crit_nosvc.fingerprint(), &crit_nosvc)];
        assert!(inhibited_by(&rules, &warn_nosvc, firing.iter().map(|(f, l)| (*f, *l))).is_some());
    }

    #[test]
    fn an_alert_never_inhibits_itself() {
        // Source and target overlap: alertname=~"A|B" on both sides.
        let rules = [rule(r#"alertname=~"A|B""#, r#"alertname=~"A|B""#, &[])];
        let a = l(&[("alertname", "A")]);
        let b = l(&[("alertname", "B")]);
        let only_a = [(a.fingerprint(), &a)];
        assert_eq!(
            inhibited_by(&rules, &a, only_a.iter().map(|(f, l)| (*f, *l))),
            None
        );
        // B matches both sides too, so A (also both sides) does not inhibit it either.
        let both = [(a.fingerprint(), &a), (b.fingerprint(), &b)];
        assert_eq!(
            inhibited_by(&rules, &b, both.iter().map(|(f, l)| (*f, *l))),
            None
        );
    }
}
