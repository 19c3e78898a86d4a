//! Label-set operations the evaluator applies to series: dropping the
//! metric name and metadata, keeping or removing labels for `by`/`without`
//! and `on`/`ignoring`, and the signature that matches series across sides.

use crate::labels::{Label, Labels, METRIC_NAME};

/// Removes `__name__` and the other metadata labels (`__type__`, `__unit__`).
pub(crate) fn strip_metadata(l: &Labels) -> Labels {
    if !l
        .iter()
        .any(|x| matches!(&*x.name, METRIC_NAME | "__type__" | "__unit__"))
    {
        return l.clone();
    }
    Labels::from_sorted_labels(
        l.iter()
            .filter(|x| !matches!(&*x.name, METRIC_NAME | "__type__" | "__unit__"))
            .cloned()
            .collect(),
    )
}

/// Keeps only the listed labels.
pub(crate) fn keep_labels(l: &Labels, names: &[String]) -> Labels {
    Labels::from_sorted_labels(
        l.iter()
            .filter(|x| names.iter().any(|n| n.as_str() == &*x.name))
            .cloned()
            .collect(),
    )
}

/// Removes the listed labels (and `__name__` when `and_name`).
pub(crate) fn remove_labels(l: &Labels, names: &[String], and_name: bool) -> Labels {
    Labels::from_sorted_labels(
        l.iter()
            .filter(|x| {
                let listed = names.iter().any(|n| n.as_str() == &*x.name);
                !(listed || and_name && &*x.name == METRIC_NAME)
            })
            .cloned()
            .collect(),
    )
}

/// Sets (or, with an empty value, removes) one label.
pub(crate) fn set_label(l: &Labels, name: &str, value: &str) -> Labels {
    let mut v: Vec<Label> = l.iter().filter(|x| &*x.name != name).cloned().collect();
    if !value.is_empty() {
        let pos = v.partition_point(|x| &*x.name < name);
        v.insert(
            pos,
            Label {
                name: name.into(),
                value: value.into(),
            },
        );
    }
    Labels::from_sorted_labels(v)
}

/// A byte signature of the labels used for matching: with `on`, only `names`;
/// otherwise every label except `names` and `__name__`.
pub(crate) fn signature(l: &Labels, on: bool, names: &[String]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    for x in l.iter() {
        let listed = names.iter().any(|n| n.as_str() == &*x.name);
        let include = if on {
            listed
        } else {
            !listed && &*x.name != METRIC_NAME
        };
        if include {
            buf.extend_from_slice(x.name.as_bytes());
            buf.push(0xff);
            buf.extend_from_slice(x.value.as_bytes());
            buf.push(0xff);
        }
    }
    buf
}
