//! The words of the action journal, as types. The audit stores a
//! [`Decision`] as its stable word (the `decision` column, the API's
//! `decision` field), an intent its [`IntentKind`] as a word and its
//! [`IntentDetail`] as JSON; the store converts at the SQLite boundary and
//! everyone else matches the types, never text.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cloud_run::PlannedBase;
use crate::alert::Alert;
use crate::clock::TimestampMs;
use crate::config::actions::Effect;
use crate::labels::Labels;

/// What an intent changes (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentKind {
    CloudRunTraffic,
    CloudRunEnv,
    Command,
}

impl IntentKind {
    pub const ALL: [IntentKind; 3] = [
        IntentKind::CloudRunTraffic,
        IntentKind::CloudRunEnv,
        IntentKind::Command,
    ];

    /// The stable word stored and served (the config's effect name).
    pub fn as_str(self) -> &'static str {
        match self {
            IntentKind::CloudRunTraffic => "cloud_run_traffic",
            IntentKind::CloudRunEnv => "cloud_run_env",
            IntentKind::Command => "command",
        }
    }

    /// The kind a stored word names (`None` for a word this version does not know).
    pub fn parse(word: &str) -> Option<IntentKind> {
        IntentKind::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// The kind of intent a configured effect writes.
    pub fn of(effect: &Effect) -> IntentKind {
        match effect {
            Effect::CloudRunTraffic(_) => IntentKind::CloudRunTraffic,
            Effect::CloudRunEnv(_) => IntentKind::CloudRunEnv,
            Effect::Command(_) => IntentKind::Command,
        }
    }

    /// Whether the effect is a change of a Cloud Run service (re-readable at
    /// reconcile; a command is not).
    pub fn is_cloud_run(self) -> bool {
        matches!(self, IntentKind::CloudRunTraffic | IntentKind::CloudRunEnv)
    }
}

impl std::fmt::Display for IntentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for IntentKind {
    fn eq(&self, word: &&str) -> bool {
        self.as_str() == *word
    }
}

/// The triggering alert as an intent keeps it, so a restart knows what
/// started the run. The JSON shape is the one written since intents exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Written as `null` when not finite (serde_json's way); read back as 0.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub value: f64,
    pub active_at_ms: TimestampMs,
    #[serde(default)]
    pub starts_at_ms: TimestampMs,
    #[serde(default)]
    pub generator_url: String,
}

impl From<&Alert> for StoredAlert {
    fn from(a: &Alert) -> Self {
        Self {
            labels: a.labels.to_map(),
            annotations: a.annotations.clone(),
            value: a.value,
            active_at_ms: a.active_at_ms,
            starts_at_ms: a.starts_at_ms,
            generator_url: a.generator_url.clone(),
        }
    }
}

impl StoredAlert {
    /// The alert as it fired (never resolved: it is what triggered the run).
    pub fn to_alert(&self) -> Alert {
        Alert {
            labels: Labels::from_map(&self.labels),
            annotations: self.annotations.clone(),
            active_at_ms: self.active_at_ms,
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: None,
            value: self.value,
            generator_url: self.generator_url.clone(),
        }
    }
}

/// What an effect needs to be re-done or checked after a restart (the
/// intent's `detail` column, JSON). Every field reads leniently: a field
/// this version cannot read is as if absent, as the earlier untyped reader
/// treated it, so rows written by any earlier version still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntentDetail {
    /// The alert that triggered the run (`None`: a manual run).
    #[serde(default, deserialize_with = "lenient")]
    pub alert: Option<StoredAlert>,
    /// The revision serving when the run began (the deploy being undone).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub origin: Option<String>,
    /// The service as the change was planned against (absent in intents
    /// written before plans were checked).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub planned: Option<PlannedBase>,
    /// The variables an env revert sets.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// The command a command step runs.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub argv: Vec<String>,
}

impl IntentDetail {
    /// The detail of a run triggered by `alert` (`None`: manual).
    pub fn for_alert(alert: Option<&Alert>) -> Self {
        Self {
            alert: alert.map(StoredAlert::from),
            ..Self::default()
        }
    }

    /// The triggering alert, when the run had one.
    pub fn trigger(&self) -> Option<Alert> {
        self.alert.as_ref().map(StoredAlert::to_alert)
    }
}

/// A field that does not read as `T` reads as `T::default()`.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).unwrap_or_default())
}

fn null_as_zero<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Started,
    Done,
    Verified,
    NotVerified,
    Failed,
    Skipped,
    DryRun,
    Superseded,
    Reconciled,
    Hold,
    Unhold,
    Escalated,
    VetoWindow,
}

impl Decision {
    pub const ALL: [Decision; 13] = [
        Decision::Started,
        Decision::Done,
        Decision::Verified,
        Decision::NotVerified,
        Decision::Failed,
        Decision::Skipped,
        Decision::DryRun,
        Decision::Superseded,
        Decision::Reconciled,
        Decision::Hold,
        Decision::Unhold,
        Decision::Escalated,
        Decision::VetoWindow,
    ];

    /// The stable word stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Started => "started",
            Decision::Done => "done",
            Decision::Verified => "verified",
            Decision::NotVerified => "not_verified",
            Decision::Failed => "failed",
            Decision::Skipped => "skipped",
            Decision::DryRun => "dry_run",
            Decision::Superseded => "superseded",
            Decision::Reconciled => "reconciled",
            Decision::Hold => "hold",
            Decision::Unhold => "unhold",
            Decision::Escalated => "escalated",
            Decision::VetoWindow => "veto_window",
        }
    }

    /// The decision a stored word names (`None` for a word this version
    /// does not know).
    pub fn parse(word: &str) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.as_str() == word)
    }

    /// Whether the entry says a run gave up without fixing the alert.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Decision::Failed | Decision::NotVerified | Decision::Escalated
        )
    }
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for Decision {
    fn eq(&self, word: &&str) -> bool {
        self.as_str() == *word
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_round_trips_through_its_word() {
        for d in Decision::ALL {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
        }
        assert_eq!(Decision::parse("rolled_back"), None);
    }

    #[test]
    fn the_stored_words_stay_the_same() {
        let words: Vec<&str> = Decision::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(
            words,
            [
                "started",
                "done",
                "verified",
                "not_verified",
                "failed",
                "skipped",
                "dry_run",
                "superseded",
                "reconciled",
                "hold",
                "unhold",
                "escalated",
                "veto_window"
            ]
        );
    }

    #[test]
    fn every_intent_kind_round_trips_and_keeps_its_word() {
        for k in IntentKind::ALL {
            assert_eq!(IntentKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        let words: Vec<&str> = IntentKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(words, ["cloud_run_traffic", "cloud_run_env", "command"]);
        assert_eq!(IntentKind::parse("cloud_run_jobs"), None);
    }

    #[test]
    fn a_detail_field_that_cannot_be_read_is_taken_as_absent() {
        // The untyped reader ignored a bad field and read the others.
        let d: IntentDetail = serde_json::from_value(serde_json::json!({
            "alert": {"labels": {"alertname": "A"}},
            "origin": 5,
            "env": {"FLAG": "off"},
            "argv": "not a list",
        }))
        .unwrap();
        assert_eq!(d.alert, None, "an alert without active_at_ms");
        assert_eq!(d.origin, None);
        assert_eq!(d.env["FLAG"], "off");
        assert!(d.argv.is_empty());
    }

    #[test]
    fn a_stored_alert_keeps_what_the_trigger_needs() {
        let mut a = Alert {
            labels: Labels::from_pairs([("alertname", "A"), ("service", "s")]),
            annotations: [("summary".to_string(), "x".to_string())].into(),
            active_at_ms: 10,
            starts_at_ms: 70,
            ends_at_ms: Some(99),
            value: f64::NAN,
            generator_url: "g".into(),
        };
        let stored = serde_json::to_string(&IntentDetail::for_alert(Some(&a))).unwrap();
        let back: IntentDetail = serde_json::from_str(&stored).unwrap();
        a.ends_at_ms = None;
        a.value = 0.0;
        assert_eq!(back.trigger(), Some(a));
    }
}
