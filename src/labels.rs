//! Label sets: sorted by name, cheap to clone, hashed and compared by content.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::clock::TimestampMs;

pub const METRIC_NAME: &str = "__name__";

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Label {
    pub name: Arc<str>,
    pub value: Arc<str>,
}

/// An immutable label set, sorted by name, without empty values.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Labels(Arc<[Label]>);

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl Labels {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a label set from pairs; later duplicates win, empty values are dropped
    /// (an empty label value means "no such label" in Prometheus).
    pub fn from_pairs<I, N, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut owned: BTreeMap<String, String> = BTreeMap::new();
        for (n, v) in pairs {
            owned.insert(n.as_ref().to_string(), v.as_ref().to_string());
        }
        Self(
            owned
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, v)| Label {
                    name: Arc::from(n),
                    value: Arc::from(v),
                })
                .collect(),
        )
    }

    /// Builds a set from labels already sorted by name, with unique names and
    /// non-empty values (the caller guarantees it; used by the tsdb and engine).
    pub fn from_sorted_labels(labels: Vec<Label>) -> Self {
        debug_assert!(labels.windows(2).all(|w| w[0].name < w[1].name));
        Self(labels.into())
    }

    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        Self::from_pairs(map.iter())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_ref().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_ref())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|l| (l.name.to_string(), l.value.to_string()))
            .collect()
    }

    /// A builder that starts from this set.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            map: self
                .0
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect(),
        }
    }

    pub fn without_metric_name(&self) -> Labels {
        self.builder().remove(METRIC_NAME).build()
    }

    /// Alertmanager's fingerprint: FNV-1a 64 over names and values, each followed by 0xff.
    pub fn fingerprint(&self) -> u64 {
        const OFFSET: u64 = 0xcbf29ce484222325;
        const PRIME: u64 = 0x100000001b3;
        if self.0.is_empty() {
            return OFFSET;
        }
        let mut h = OFFSET;
        for l in self.0.iter() {
            for b in l
                .name
                .bytes()
                .chain([0xffu8])
                .chain(l.value.bytes())
                .chain([0xffu8])
            {
                h ^= b as u64;
                h = h.wrapping_mul(PRIME);
            }
        }
        h
    }

    pub fn fingerprint_hex(&self) -> String {
        format!("{:016x}", self.fingerprint())
    }
}

impl fmt::Display for Labels {
    /// Prometheus notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        if let Some(n) = name {
            f.write_str(n)?;
        }
        let rest: Vec<&Label> = self.0.iter().filter(|l| &*l.name != METRIC_NAME).collect();
        if rest.is_empty() && name.is_some() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, l) in rest.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value.as_ref())?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Clone, Default)]
pub struct LabelsBuilder {
    map: BTreeMap<Arc<str>, Arc<str>>,
}

impl LabelsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.insert(name, value);
        self
    }

    pub fn insert(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        if value.as_ref().is_empty() {
            self.map.remove(name.as_ref());
        } else {
            self.map
                .insert(Arc::from(name.as_ref()), Arc::from(value.as_ref()));
        }
    }

    pub fn remove(mut self, name: &str) -> Self {
        self.map.remove(name);
        self
    }

    pub fn build(self) -> Labels {
        Labels(
            self.map
                .into_iter()
                .map(|(name, value)| Label { name, value })
                .collect(),
        )
    }
}

/// One sample: a label set, a time and a value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub timestamp_ms: TimestampMs,
    pub value: f64,
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_deduplicated() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.to_string(), r#"{a="1", b="3"}"#);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn display_with_name() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        assert_eq!(l.to_string(), r#"up{job="x"}"#);
        assert_eq!(Labels::from_pairs([("__name__", "up")]).to_string(), "up");
    }

    #[test]
    fn fingerprint_matches_alertmanager() {
        // Alertmanager: model.LabelSet{}.Fingerprint() is the FNV-64a offset basis.
        assert_eq!(Labels::empty().fingerprint(), 0xcbf29ce484222325);
        let a = Labels::from_pairs([("alertname", "A"), ("x", "1")]);
        let b = Labels::from_pairs([("x", "1"), ("alertname", "A")]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(
            a.fingerprint(),
            Labels::from_pairs([("alertname", "A")]).fingerprint()
        );
        assert_eq!(a.fingerprint_hex().len(), 16);
    }
}
