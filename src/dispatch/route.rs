//! The routing tree, as Alertmanager builds it: the root matches every alert;
//! children are tried in order and the first match stops the search unless it
//! has `continue: true`; a node with no matching child is itself the match.
//! `receiver`, `group_by`, `group_wait`, `group_interval` and `repeat_interval`
//! are inherited from the parent; `mute_time_intervals` and
//! `active_time_intervals` are not.

use std::time::Duration;

use crate::config::routing::RouteConfig;
use crate::labels::{Labels, LabelsBuilder};

use crate::matchers::Matchers;

pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// The settings a route applies to the alert groups it forms.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteOpts {
    pub receiver: String,
    /// Label names to group by (sorted); ignored when `group_by_all`.
    pub group_by: Vec<String>,
    /// `group_by: ['...']`: every label, i.e. no grouping.
    pub group_by_all: bool,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub mute_time_intervals: Vec<String>,
    pub active_time_intervals: Vec<String>,
}

impl RouteOpts {
    /// The labels of `labels` this route groups by.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        if self.group_by_all {
            return labels.clone();
        }
        let mut b = LabelsBuilder::new();
        for name in &self.group_by {
            if let Some(v) = labels.get(name) {
                b.insert(name, v);
            }
        }
        b.build()
    }
}

/// One node of the tree, stored flat; `children` index into [`RouteTree::nodes`].
#[derive(Clone, Debug)]
pub struct RouteNode {
    pub opts: RouteOpts,
    pub matchers: Matchers,
    pub r#continue: bool,
    /// Alertmanager's route key: the parent's key, `/`, this node's matchers (`{}` at the root).
    pub key: String,
    /// Unique id: the key, plus `/<index>` when siblings share the key.
    pub id: String,
    pub children: Vec<usize>,
    pub parent: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct RouteTree {
    pub nodes: Vec<RouteNode>,
}

impl RouteTree {
    /// Builds the tree from a validated config. Matchers that do not parse
    /// (validation reports them) make the route match nothing.
    pub fn from_config(root: &RouteConfig) -> Self {
        let mut tree = RouteTree { nodes: Vec::new() };
        let defaults = RouteOpts {
            receiver: String::new(),
            group_by: Vec::new(),
            group_by_all: false,
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
        };
        tree.add(root, &defaults, None);
        tree
    }

    fn add(&mut self, cfg: &RouteConfig, parent_opts: &RouteOpts, parent: Option<usize>) -> usize {
        let mut opts = parent_opts.clone();
        if let Some(r) = &cfg.receiver {
            opts.receiver = r.clone();
        }
        if let Some(g) = &cfg.group_by {
            opts.group_by_all = g.iter().any(|l| l == "...");
            let mut names: Vec<String> = g.iter().filter(|l| *l != "...").cloned().collect();
            names.sort();
            names.dedup();
            opts.group_by = names;
        }
        if let Some(d) = cfg.group_wait {
            opts.group_wait = d.0;
        }
        if let Some(d) = cfg.group_interval {
            opts.group_interval = d.0;
        }
        if let Some(d) = cfg.repeat_interval {
            opts.repeat_interval = d.0;
        }
        opts.mute_time_intervals = cfg.mute_time_intervals.clone();
        opts.active_time_intervals = cfg.active_time_intervals.clone();
        let (matchers, valid) = match cfg.all_matchers() {
            Ok(m) => (m.sorted(), true),
            Err(_) => (Matchers::default(), false),
        };
        let key = match parent {
            Some(p) => format!("{}/{}", self.nodes[p].key, matchers),
            None => matchers.to_string(),
        };
        let idx = self.nodes.len();
        self.nodes.push(RouteNode {
            opts: opts.clone(),
            matchers,
            r#continue: cfg.r#continue,
            id: key.clone(),
            key,
            children: Vec::new(),
            parent,
        });
        if !valid {
            // An impossible matcher: a label name that cannot exist.
            if let Ok(m) = crate::matchers::Matcher::new(
                "__invalid_route__",
                crate::matchers::MatchType::Equal,
                "x",
            ) {
                self.nodes[idx].matchers.0.push(m);
            }
        }
        let mut children = Vec::new();
        for child in &cfg.routes {
            children.push(self.add(child, &opts, Some(idx)));
        }
        // Alertmanager's ID(): siblings with the same key are told apart by index.
        for &c in &children {
            let same = children
                .iter()
                .filter(|&&o| self.nodes[o].key == self.nodes[c].key)
                .count();
            if same > 1 {
                let pos = children.iter().position(|&o| o == c).unwrap_or(0);
                self.nodes[c].id = format!("{}/{}", self.nodes[c].key, pos);
            }
        }
        self.nodes[idx].children = children;
        idx
    }

    pub fn root(&self) -> &RouteNode {
        &self.nodes[0]
    }

    /// The routes an alert with `labels` goes to, in order.
    pub fn match_labels(&self, labels: &Labels) -> Vec<usize> {
        let mut out = Vec::new();
        if !self.nodes.is_empty() {
            self.match_node(0, labels, &mut out);
        }
        out
    }

    fn match_node(&self, idx: usize, labels: &Labels, out: &mut Vec<usize>) -> bool {
        let node = &self.nodes[idx];
        if !node.matchers.matches(labels) {
            return false;
        }
        let before = out.len();
        for &c in &node.children {
            let matched = self.match_node(c, labels, out);
            if matched && !self.nodes[c].r#continue {
                break;
            }
        }
        if out.len() == before {
            out.push(idx);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(yaml: &str) -> RouteTree {
        let cfg: RouteConfig = serde_yaml_ng::from_str(yaml).unwrap();
        RouteTree::from_config(&cfg)
    }
    fn receivers(t: &RouteTree, pairs: &[(&str, &str)]) -> Vec<String> {
        t.match_labels(&Labels::from_pairs(pairs.iter().copied()))
            .into_iter()
            .map(|i| t.nodes[i].opts.receiver.clone())
            .collect()
    }

    #[test]
    fn first_match_wins_continue_goes_on_and_settings_inherit() {
        let t = tree(
            r#"
receiver: default
group_by: [alertname]
group_wait: 10s
routes:
  - matchers: ['severity="critical"']
    receiver: pager
    continue: true
    group_interval: 1m
  - matchers: ['service=~"back.*"']
    receiver: backend
    routes:
      - matchers: ['team="db"']
        receiver: dba
        group_by: ['...']
  - matchers: ['service=~"back.*"']
    receiver: never
"#,
        );
        assert_eq!(receivers(&t, &[("service", "x")]), ["default"]);
        assert_eq!(
            receivers(&t, &[("severity", "critical"), ("service", "backend")]),
            ["pager", "backend"]
        );
        assert_eq!(
            receivers(&t, &[("service", "backend"), ("team", "db")]),
            ["dba"]
        );
        assert_eq!(
            receivers(&t, &[("severity", "critical")]),
            ["pager"],
            "a continue match alone keeps the parent from matching"
        );
        let pager = &t.nodes[t.match_labels(&Labels::from_pairs([("severity", "critical")]))[0]];
        assert_eq!(pager.opts.group_wait, Duration::from_secs(10), "inherited");
        assert_eq!(pager.opts.group_interval, Duration::from_secs(60));
        assert_eq!(pager.opts.repeat_interval, DEFAULT_REPEAT_INTERVAL);
        assert_eq!(pager.key, r#"{}/{severity="critical"}"#);
        let dba = t.nodes.iter().find(|n| n.opts.receiver == "dba").unwrap();
        assert!(dba.opts.group_by_all);
        assert_eq!(dba.key, r#"{}/{service=~"back.*"}/{team="db"}"#);
        let ids: Vec<&str> = t
            .nodes
            .iter()
            .filter(|n| n.key == r#"{}/{service=~"back.*"}"#)
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(
            ids,
            [r#"{}/{service=~"back.*"}/1"#, r#"{}/{service=~"back.*"}/2"#]
        );
    }

    #[test]
    fn group_labels() {
        let t = tree("receiver: r\ngroup_by: [service, alertname]\n");
        let l = Labels::from_pairs([("alertname", "A"), ("instance", "i"), ("service", "s")]);
        assert_eq!(
            t.root().opts.group_labels(&l).to_string(),
            r#"{alertname="A", service="s"}"#
        );
        let t = tree("receiver: r\n");
        assert!(
            t.root().opts.group_labels(&l).is_empty(),
            "no group_by: one group"
        );
    }
}
