//! Named time intervals (Alertmanager's `time_intervals`), used by routes as
//! `mute_time_intervals` / `active_time_intervals`, and by actions as mute windows.
//!
//! Semantics follow Alertmanager's `timeinterval` package: an interval matches
//! when every field it gives matches (times are `[start, end)` in minutes of
//! the day, other ranges inclusive; negative days of month count from the end
//! of the month), all evaluated in `location` (default UTC). A named interval
//! is active when any of its intervals matches. Our extension: `cron` +
//! `duration`, a window that opens each time the cron expression fires.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};

use serde::{Deserialize, Deserializer};

use crate::duration::Dur;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalConfig {
    pub name: String,
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalSpec>,
}

/// One interval: every field given must match (an empty interval always matches).
/// `cron` + `duration` is rearguard's extension: the window opens at each time
/// the cron expression fires and lasts `duration` (e.g. a nightly deploy window).
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalSpec {
    #[serde(default)]
    pub times: Vec<TimeRangeSpec>,
    #[serde(default)]
    pub weekdays: Vec<RangeValue>,
    #[serde(default)]
    pub days_of_month: Vec<RangeValue>,
    #[serde(default)]
    pub months: Vec<RangeValue>,
    #[serde(default)]
    pub years: Vec<RangeValue>,
    #[serde(default)]
    pub location: Option<String>,
    /// A cron expression (5 fields `min hour dom month dow`, or the `cron` crate's 6–7 with seconds).
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub duration: Option<Dur>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeSpec {
    pub start_time: String,
    pub end_time: String,
}

/// A range such as `monday:friday`, `1:5`, `-3:-1` or a single value; YAML may
/// give numbers unquoted.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RangeValue(pub String);

impl<'de> Deserialize<'de> for RangeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::S(s) => RangeValue(s),
            Raw::I(i) => RangeValue(i.to_string()),
        })
    }
}

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldStep {
    Key(&'static str),
    Index(usize),
}

/// Where in a [`TimeIntervalSpec`] a bad value sits, e.g. `times[0].start_time`
/// (the config turns it into a located path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<FieldStep>);

impl FieldPath {
    fn root() -> Self {
        Self::default()
    }
    fn key(&self, k: &'static str) -> Self {
        let mut steps = self.0.clone();
        steps.push(FieldStep::Key(k));
        Self(steps)
    }
    fn index(&self, i: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(FieldStep::Index(i));
        Self(steps)
    }

    pub fn steps(&self) -> &[FieldStep] {
        &self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                FieldStep::Key(k) if i == 0 => write!(f, "{k}")?,
                FieldStep::Key(k) => write!(f, ".{k}")?,
                FieldStep::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Location {
    Utc,
    Local,
    Tz(chrono_tz::Tz),
}

#[derive(Clone, Debug)]
struct CronWindow {
    schedule: cron::Schedule,
    duration: chrono::Duration,
}

/// One compiled interval.
#[derive(Clone, Debug)]
pub struct TimeInterval {
    /// Minutes of the day, `[start, end)`.
    times: Vec<(u32, u32)>,
    /// 0 = Sunday, inclusive.
    weekdays: Vec<(u32, u32)>,
    days_of_month: Vec<(i32, i32)>,
    months: Vec<(u32, u32)>,
    years: Vec<(i32, i32)>,
    location: Location,
    window: Option<CronWindow>,
}

type SpecError = (FieldPath, String);

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn split_range(s: &str) -> (&str, &str) {
    // A leading '-' is a sign (days_of_month), so split on the first ':' only.
    match s.split_once(':') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    }
}

fn parse_ranges<T: Copy + PartialOrd>(
    field: &'static str,
    values: &[RangeValue],
    parse_one: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<(T, T)>, SpecError> {
    let mut out = Vec::new();
    for (i, RangeValue(raw)) in values.iter().enumerate() {
        let path = FieldPath::root().key(field).index(i);
        let (a, b) = split_range(raw);
        let begin = parse_one(a).map_err(|e| (path.clone(), e))?;
        let end = parse_one(b).map_err(|e| (path.clone(), e))?;
        out.push((begin, end));
    }
    Ok(out)
}

fn parse_named(s: &str, names: &[&str], first: u32, what: &str) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + first);
    }
    match s.parse::<u32>() {
        Ok(n) if what == "month" && (1..=12).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a valid {what} (use e.g. {})",
            names[0]
        )),
    }
}

fn parse_time_of_day(s: &str) -> Result<u32, String> {
    let bad = || format!("invalid time of day {s:?}: use HH:MM between 00:00 and 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl TimeInterval {
    /// Compiles one interval; an error carries the path of the bad field
    /// relative to the interval.
    pub fn from_spec(spec: &TimeIntervalSpec) -> Result<Self, SpecError> {
        let root = FieldPath::root();
        let mut times = Vec::new();
        for (i, t) in spec.times.iter().enumerate() {
            let p = root.key("times").index(i);
            let start = parse_time_of_day(&t.start_time).map_err(|e| (p.key("start_time"), e))?;
            let end = parse_time_of_day(&t.end_time).map_err(|e| (p.key("end_time"), e))?;
            if start >= end {
                return Err((
                    p.key("end_time"),
                    "start_time must be before end_time".into(),
                ));
            }
            times.push((start, end));
        }
        let weekdays = parse_ranges("weekdays", &spec.weekdays, |s| {
            parse_named(s, &WEEKDAYS, 0, "weekday")
        })?;
        for (i, (b, e)) in weekdays.iter().enumerate() {
            if b > e {
                return Err((
                    root.key("weekdays").index(i),
                    "start day cannot be after end day".into(),
                ));
            }
        }
        let days_of_month = parse_ranges("days_of_month", &spec.days_of_month, |s| {
            let n: i32 = s
                .parse()
                .map_err(|_| format!("{s:?} is not a day of month (1..31 or -31..-1)"))?;
            if n == 0 || !(-31..=31).contains(&n) {
                return Err(format!(
                    "{n} is not a day of month (1..31, or -31..-1 counting from the end)"
                ));
            }
            Ok(n)
        })?;
        for (i, (b, e)) in days_of_month.iter().enumerate() {
            // Only comparable when both count from the same end of the month.
            if (b.signum() == e.signum()) && b > e {
                return Err((
                    root.key("days_of_month").index(i),
                    "start day cannot be after end day".into(),
                ));
            }
            if *b < 0 && *e > 0 {
                return Err((
                    root.key("days_of_month").index(i),
                    "a range cannot start counting from the end of the month and end counting from its start".into(),
                ));
            }
        }
        let months = parse_ranges("months", &spec.months, |s| {
            parse_named(s, &MONTHS, 1, "month")
        })?;
        for (i, (b, e)) in months.iter().enumerate() {
            if b > e {
                return Err((
                    root.key("months").index(i),
                    "start month cannot be after end month".into(),
                ));
            }
        }
        let years = parse_ranges("years", &spec.years, |s| {
            s.parse::<i32>().map_err(|_| format!("{s:?} is not a year"))
        })?;
        for (i, (b, e)) in years.iter().enumerate() {
            if b > e {
                return Err((
                    root.key("years").index(i),
                    "start year cannot be after end year".into(),
                ));
            }
        }
        let location = match spec.location.as_deref() {
            None | Some("UTC") | Some("") => Location::Utc,
            Some("Local") => Location::Local,
            Some(name) => Location::Tz(chrono_tz::Tz::from_str(name).map_err(|_| {
                (
                    root.key("location"),
                    format!("unknown time zone {name:?} (use an IANA name such as Europe/Berlin, or UTC, or Local)"),
                )
            })?),
        };
        let window = match (&spec.cron, spec.duration) {
            (None, None) => None,
            (Some(_), None) => {
                return Err((
                    root.key("cron"),
                    "a cron window needs a `duration` (how long it stays open)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    root.key("duration"),
                    "`duration` needs a `cron` expression (when the window opens)".into(),
                ))
            }
            (Some(expr), Some(d)) => {
                let schedule = parse_cron(expr).map_err(|e| (root.key("cron"), e))?;
                if d.0.is_zero() {
                    return Err((
                        root.key("duration"),
                        "duration must be greater than 0".into(),
                    ));
                }
                let duration = chrono::Duration::from_std(d.0)
                    .map_err(|_| (root.key("duration"), "duration is too long".into()))?;
                Some(CronWindow { schedule, duration })
            }
        };
        Ok(Self {
            times,
            weekdays,
            days_of_month,
            months,
            years,
            location,
            window,
        })
    }

    /// Whether `t` falls inside this interval.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        match &self.location {
            Location::Utc => self.contains_in(t),
            Location::Local => self.contains_in(t.with_timezone(&chrono::Local)),
            Location::Tz(tz) => self.contains_in(t.with_timezone(tz)),
        }
    }

    fn contains_in<Z: TimeZone>(&self, t: DateTime<Z>) -> bool {
        if !self.times.is_empty() {
            let minute = t.hour() * 60 + t.minute();
            if !self.times.iter().any(|(s, e)| minute >= *s && minute < *e) {
                return false;
            }
        }
        if !self.weekdays.is_empty() {
            let wd = t.weekday().num_days_from_sunday();
            if !self.weekdays.iter().any(|(b, e)| wd >= *b && wd <= *e) {
                return false;
            }
        }
        if !self.days_of_month.is_empty() {
            let dim = days_in_month(t.year(), t.month()) as i32;
            let day = t.day() as i32;
            let inside = self.days_of_month.iter().any(|(b, e)| {
                let begin = if *b < 0 { dim + b + 1 } else { *b };
                let end = if *e < 0 { dim + e + 1 } else { *e };
                if begin > dim {
                    return false;
                }
                let begin = begin.clamp(-dim, dim);
                let end = end.clamp(-dim, dim);
                day >= begin && day <= end
            });
            if !inside {
                return false;
            }
        }
        if !self.months.is_empty() {
            let m = t.month();
            if !self.months.iter().any(|(b, e)| m >= *b && m <= *e) {
                return false;
            }
        }
        if !self.years.is_empty() {
            let y = t.year();
            if !self.years.iter().any(|(b, e)| y >= *b && y <= *e) {
                return false;
            }
        }
        if let Some(w) = &self.window {
            // The first opening strictly after `t - duration`; inside when it is not after `t`.
            let from = t.clone() - w.duration;
            match w.schedule.after(&from).next() {
                Some(open) if open <= t => {}
                _ => return false,
            }
        }
        true
    }
}

/// Parses a cron expression: 5 fields (minute precision, as in crontab) or the
/// `cron` crate's 6 or 7 fields (with seconds, optional year).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|e| {
        format!("invalid cron expression {expr:?}: {e} (use 5 fields: minute hour day-of-month month day-of-week)")
    })
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map(|d| d.day())
        .unwrap_or(31)
}

/// The named intervals of a config.
#[derive(Clone, Debug, Default)]
pub struct TimeIntervals {
    by_name: HashMap<String, Vec<TimeInterval>>,
}

impl TimeIntervals {
    /// Compiles the config's intervals; invalid ones (already reported by
    /// validation) are skipped.
    pub fn from_config(configs: &[TimeIntervalConfig]) -> Self {
        let mut by_name = HashMap::new();
        for c in configs {
            let compiled: Vec<TimeInterval> = c
                .time_intervals
                .iter()
                .filter_map(|s| TimeInterval::from_spec(s).ok())
                .collect();
            by_name.insert(c.name.clone(), compiled);
        }
        Self { by_name }
    }

    /// Whether the named interval is active at `t`; `None` when no such name.
    pub fn is_active(&self, name: &str, t: DateTime<Utc>) -> Option<bool> {
        self.by_name
            .get(name)
            .map(|ivs| ivs.iter().any(|iv| iv.contains(t)))
    }

    pub fn contains_name(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rv(v: &[&str]) -> Vec<RangeValue> {
        v.iter().map(|s| RangeValue(s.to_string())).collect()
    }
    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn business_hours_in_a_time_zone() {
        let iv = TimeInterval::from_spec(&TimeIntervalSpec {
            times: vec![TimeRangeSpec {
                start_time: "09:00".into(),
                end_time: "17:00".into(),
            }],
            weekdays: rv(&["monday:friday"]),
            location: Some("Europe/Berlin".into()),
            ..Default::default()
        })
        .unwrap();
        // 2026-11-23 is a Monday; Berlin is UTC+1 in November.
        assert!(
            iv.contains(at("2026-11-23T08:00:00Z")),
            "09:00 Berlin is inside"
        );
        assert!(
            !iv.contains(at("2026-11-23T07:59:00Z")),
            "08:59 Berlin is outside"
        );
        assert!(
            !iv.contains(at("2026-11-23T16:00:00Z")),
            "17:00 Berlin: end is exclusive"
        );
        assert!(!iv.contains(at("2026-11-22T10:00:00Z")), "Sunday");
    }

    #[test]
    fn negative_days_of_month_months_and_years() {
        let iv = TimeInterval::from_spec(&TimeIntervalSpec {
            days_of_month: rv(&["-3:-1"]),
            months: rv(&["february", "11:12"]),
            years: rv(&["2026:2027"]),
            ..Default::default()
        })
        .unwrap();
        assert!(
            iv.contains(at("2026-11-28T00:00:00Z")),
            "Nov 28 is 3rd-last of 30 days"
        );
        assert!(!iv.contains(at("2026-11-27T23:59:00Z")));
        assert!(
            iv.contains(at("2027-02-26T12:00:00Z")),
            "Feb 2027 has 28 days"
        );
        assert!(!iv.contains(at("2027-02-25T12:00:00Z")));
        assert!(!iv.contains(at("2027-03-30T12:00:00Z")), "March not listed");
        assert!(!iv.contains(at("2028-11-30T12:00:00Z")), "2028 not listed");
        let single = TimeInterval::from_spec(&TimeIntervalSpec {
            days_of_month: rv(&["1", "15:-1"]),
            ..Default::default()
        })
        .unwrap();
        assert!(single.contains(at("2026-11-01T05:00:00Z")));
        assert!(!single.contains(at("2026-11-02T05:00:00Z")));
        assert!(single.contains(at("2026-11-30T05:00:00Z")));
    }

    #[test]
    fn cron_window() {
        // Nightly deploy window: 02:00 for 45 minutes.
        let iv = TimeInterval::from_spec(&TimeIntervalSpec {
            cron: Some("0 2 * * *".into()),
            duration: Some(crate::duration::Dur::secs(45 * 60)),
            ..Default::default()
        })
        .unwrap();
        assert!(iv.contains(at("2026-11-23T02:00:00Z")));
        assert!(iv.contains(at("2026-11-23T02:44:59Z")));
        assert!(!iv.contains(at("2026-11-23T02:45:00Z")));
        assert!(!iv.contains(at("2026-11-23T01:59:59Z")));
    }

    #[test]
    fn bad_specs_name_the_field() {
        let bad = |spec: TimeIntervalSpec| TimeInterval::from_spec(&spec).unwrap_err();
        let (p, m) = bad(TimeIntervalSpec {
            weekdays: rv(&["friday:monday"]),
            ..Default::default()
        });
        assert_eq!(p.to_string(), "weekdays[0]");
        assert!(m.contains("after end"), "{m}");
        let (p, _) = bad(TimeIntervalSpec {
            times: vec![TimeRangeSpec {
                start_time: "25:00".into(),
                end_time: "26:00".into(),
            }],
            ..Default::default()
        });
        assert_eq!(p.to_string(), "times[0].start_time");
        let (p, _) = bad(TimeIntervalSpec {
            location: Some("Mars/Olympus".into()),
            ..Default::default()
        });
        assert_eq!(p.to_string(), "location");
        let (p, _) = bad(TimeIntervalSpec {
            cron: Some("every night".into()),
            duration: Some(crate::duration::Dur::secs(60)),
            ..Default::default()
        });
        assert_eq!(p.to_string(), "cron");
        let (p, _) = bad(TimeIntervalSpec {
            days_of_month: rv(&["0"]),
            ..Default::default()
        });
        assert_eq!(p.to_string(), "days_of_month[0]");
    }
}
