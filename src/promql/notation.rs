//! The series notation of Prometheus test files (`promqltest` load blocks and
//! `promtool test rules` input series): `metric{l="v"} 1 2+3x4 _ stale …`.
//!
//! Native histogram values (`{{…}}`) are tokenised and reported as
//! [`Point::Histogram`] so callers can skip them.

use crate::labels::{Labels, METRIC_NAME};
use crate::tsdb::stale_nan;

/// One position of an expanded value list.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Point {
    /// `_`: no sample at this position (time still advances).
    Missing,
    Float(f64),
    /// A native histogram (not supported; kept so positions stay right).
    Histogram,
}

/// A parse error with what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NotationError(pub String);

fn nerr<T>(msg: impl Into<String>) -> Result<T, NotationError> {
    Err(NotationError(msg.into()))
}

/// Parses `<series> <values>`.
pub fn parse_series_line(line: &str) -> Result<(Labels, Vec<Point>), NotationError> {
    let (labels, rest) = parse_metric_prefix(line)?;
    Ok((labels, parse_values(rest)?))
}

/// Parses a whole metric descriptor (`name`, `name{…}`, `{…}`).
pub fn parse_metric(s: &str) -> Result<Labels, NotationError> {
    let (labels, rest) = parse_metric_prefix(s)?;
    if !rest.trim().is_empty() {
        return nerr(format!(
            "unexpected {:?} after the series {s:?}",
            rest.trim()
        ));
    }
    Ok(labels)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses the metric at the start of `s`; returns it and the remaining text.
pub fn parse_metric_prefix(s: &str) -> Result<(Labels, &str), NotationError> {
    let s = s.trim_start();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    if let Some(&(_, c)) = chars.first() {
        if is_name_start(c) {
            while i < chars.len() && is_name_char(chars[i].1) {
                i += 1;
            }
            let end = chars.get(i).map_or(s.len(), |c| c.0);
            pairs.push((METRIC_NAME.to_string(), s[..end].to_string()));
        }
    }
    let pos = chars.get(i).map_or(s.len(), |c| c.0);
    let rest = &s[pos..];
    if !rest.starts_with('{') {
        if pairs.is_empty() {
            return nerr(format!("expected a metric name or '{{' in {s:?}"));
        }
        return Ok((Labels::from_pairs(pairs), rest));
    }
    // Inside braces: items separated by commas, quotes respected.
    let body_start = pos + 1;
    let Ok(Some(end)) = find_unquoted(s, body_start, |_, b| b == b'}') else {
        return nerr(format!("unclosed '{{' in {s:?}"));
    };
    for item in split_items(&s[body_start..end])? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match find_unquoted_eq(item) {
            Some(k) => {
                let name_part = item[..k].trim();
                let value_part = item[k + 1..].trim();
                if value_part.starts_with('~') || name_part.ends_with('!') {
                    return nerr(format!("only '=' matchers are allowed in series: {item:?}"));
                }
                let name = if name_part.starts_with(['"', '\'', '`']) {
                    unquote(name_part)?
                } else {
                    if !name_part.chars().next().is_some_and(is_name_start)
                        || !name_part.chars().all(is_name_char)
                    {
                        return nerr(format!("invalid label name {name_part:?}"));
                    }
                    name_part.to_string()
                };
                let value = unquote(value_part)?;
                pairs.retain(|(n, _)| n != &name);
                pairs.push((name, value));
            }
            None => {
                // A bare quoted string is the metric name.
                let name = unquote(item)?;
                pairs.retain(|(n, _)| n != METRIC_NAME);
                pairs.push((METRIC_NAME.to_string(), name));
            }
        }
    }
    Ok((Labels::from_pairs(pairs), &s[end + 1..]))
}

fn split_items(body: &str) -> Result<Vec<&str>, NotationError> {
    let mut out = Vec::new();
    let mut start = 0;
    let scanned = find_unquoted(body, 0, |j, b| {
        if b == b',' {
            out.push(&body[start..j]);
            start = j + 1;
        }
        false
    });
    if scanned.is_err() {
        return nerr(format!("unterminated string in {body:?}"));
    }
    out.push(&body[start..]);
    Ok(out)
}

fn find_unquoted_eq(item: &str) -> Option<usize> {
    find_unquoted(item, 0, |_, b| b == b'=').ok().flatten()
}

/// `s` ends inside a quoted string.
struct UnterminatedQuote;

/// Scans `s` from byte `from`, stepping over quoted strings (`"…"`, `'…'`,
/// `` `…` ``; backslash escapes except in backticks), and returns the first
/// byte outside quotes for which `is_stop(position, byte)` holds; `Ok(None)`
/// when there is none.
fn find_unquoted(
    s: &str,
    from: usize,
    mut is_stop: impl FnMut(usize, u8) -> bool,
) -> Result<Option<usize>, UnterminatedQuote> {
    let bytes = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut j = from;
    while j < bytes.len() {
        let b = bytes[j];
        match quote {
            Some(q) => {
                if b == b'\\' && q != b'`' {
                    j += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'"' || b == b'\'' || b == b'`' {
                    quote = Some(b);
                } else if is_stop(j, b) {
                    return Ok(Some(j));
                }
            }
        }
        j += 1;
    }
    match quote {
        Some(_) => Err(UnterminatedQuote),
        None => Ok(None),
    }
}

/// Unquotes a PromQL string literal (`"…"`, `'…'` or `` `…` ``, Go escapes).
pub fn unquote(s: &str) -> Result<String, NotationError> {
    let invalid = |e: &str| NotationError(format!("invalid string {s:?}: {e}"));
    // promql-parser 0.11 slices past a backslash by one byte and panics when a
    // multi-byte character follows it (found by `fuzz/` promql). Go's
    // strconv.Unquote calls that escape a syntax error; so do we, first.
    if !s.starts_with('`') && backslash_before_non_ascii(s.as_bytes()) {
        return Err(invalid("invalid syntax"));
    }
    promql_parser::util::unquote_string(s).map_err(|e| invalid(&e))
}

fn backslash_before_non_ascii(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1).is_some_and(|next| !next.is_ascii()) {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Parses a number as in series values: decimal or scientific, optional sign,
/// `Inf`/`NaN` in any case, digit-group underscores.
pub fn parse_number(s: &str) -> Result<f64, NotationError> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "+inf" => return Ok(f64::INFINITY),
        "-inf" => return Ok(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Ok(f64::NAN),
        _ => {}
    }
    let cleaned: String = s.chars().filter(|&c| c != '_').collect();
    let ok_chars = cleaned
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !ok_chars || cleaned.is_empty() {
        return nerr(format!("invalid number {s:?}"));
    }
    cleaned
        .parse::<f64>()
        .map_err(|_| NotationError(format!("invalid number {s:?}")))
}

/// Expands a value list into positions.
pub fn parse_values(s: &str) -> Result<Vec<Point>, NotationError> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if s[i..].starts_with("{{") {
            // Histogram item: {{…}} optionally followed by (+|-){{…}} and xN.
            let mut j = i;
            loop {
                let Some(close) = s[j..].find("}}") else {
                    return nerr(format!("unclosed '{{{{' in {s:?}"));
                };
                j += close + 2;
                if s[j..].starts_with("+{{") || s[j..].starts_with("-{{") {
                    j += 1;
                    continue;
                }
                break;
            }
            let mut k = j;
            while k < bytes.len() && !bytes[k].is_ascii_whitespace() {
                k += 1;
            }
            let suffix = &s[j..k];
            let n = if suffix.is_empty() {
                1
            } else if let Some(num) = suffix.strip_prefix('x') {
                num.parse::<usize>()
                    .map_err(|_| NotationError(format!("invalid repetition {suffix:?}")))?
                    + 1
            } else {
                return nerr(format!("unexpected {suffix:?} after a histogram"));
            };
            out.extend(std::iter::repeat_n(Point::Histogram, n));
            i = k;
            continue;
        }
        let mut k = i;
        while k < bytes.len() && !bytes[k].is_ascii_whitespace() {
            k += 1;
        }
        expand_item(&s[i..k], &mut out)?;
        i = k;
    }
    Ok(out)
}

fn expand_item(tok: &str, out: &mut Vec<Point>) -> Result<(), NotationError> {
    if tok == "_" {
        out.push(Point::Missing);
        return Ok(());
    }
    if tok == "stale" {
        out.push(Point::Float(stale_nan()));
        return Ok(());
    }
    // Repetition: …xN with N an unsigned decimal.
    if let Some(xpos) = tok.rfind('x') {
        let (head, n_str) = (&tok[..xpos], &tok[xpos + 1..]);
        if !n_str.is_empty() && n_str.chars().all(|c| c.is_ascii_digit() || c == '_') {
            let n: usize = n_str
                .replace('_', "")
                .parse()
                .map_err(|_| NotationError(format!("invalid repetition in {tok:?}")))?;
            if head == "_" {
                out.extend(std::iter::repeat_n(Point::Missing, n));
                return Ok(());
            }
            if head == "stale" {
                out.extend(std::iter::repeat_n(Point::Float(stale_nan()), n + 1));
                return Ok(());
            }
            let (a, b) = split_increment(head)?;
            let mut v = a;
            out.push(Point::Float(v));
            for _ in 0..n {
                v += b;
                out.push(Point::Float(v));
            }
            return Ok(());
        }
    }
    out.push(Point::Float(parse_number(tok)?));
    Ok(())
}

/// Splits `a+b` / `a-b` (or a plain `a`, increment 0).
fn split_increment(s: &str) -> Result<(f64, f64), NotationError> {
    let bytes = s.as_bytes();
    for i in 1..bytes.len() {
        if (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E') {
            let a = parse_number(&s[..i])?;
            let b = parse_number(&s[i + 1..])?;
            return Ok((a, if bytes[i] == b'-' { -b } else { b }));
        }
    }
    Ok((parse_number(s)?, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::is_stale_nan;

    fn floats(s: &str) -> Vec<Option<f64>> {
        parse_values(s)
            .unwrap()
            .into_iter()
            .map(|p| match p {
                Point::Float(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn expands_sequences() {
        assert_eq!(
            floats("-2+4x3"),
            vec![Some(-2.0), Some(2.0), Some(6.0), Some(10.0)]
        );
        assert_eq!(
            floats("1-2x4"),
            vec![Some(1.0), Some(-1.0), Some(-3.0), Some(-5.0), Some(-7.0)]
        );
        assert_eq!(floats("1x4").len(), 5);
        assert_eq!(
            floats("0+10x2 100"),
            vec![Some(0.0), Some(10.0), Some(20.0), Some(100.0)]
        );
        assert_eq!(
            floats("1 _x3 2"),
            vec![Some(1.0), None, None, None, Some(2.0)]
        );
        assert_eq!(
            floats("1e3 .5 +Inf 1_000"),
            vec![Some(1000.0), Some(0.5), Some(f64::INFINITY), Some(1000.0)]
        );
        assert_eq!(floats("1e-1+1e1x1"), vec![Some(0.1), Some(10.1)]);
        assert!(floats("NaN")[0].unwrap().is_nan());
        let p = parse_values("1 stale").unwrap();
        assert!(matches!(p[1], Point::Float(f) if is_stale_nan(f)));
        assert!(parse_values("0x10").is_err() || floats("0x10").len() == 11);
        assert!(parse_values("abc").is_err());
    }

    #[test]
    fn repeated_addition_not_multiplication() {
        let v = floats("0.1+0.1x9");
        let mut acc = 0.1;
        for _ in 0..9 {
            acc += 0.1;
        }
        assert_eq!(v[9], Some(acc));
    }

    #[test]
    fn histograms_are_tokenised_and_skipped() {
        let p = parse_values("1 {{schema:-53 sum:0 count:24 buckets:[10 4 10] custom_values:[0.1 0.2]}}x2 {{}}+{{count:1}}x1 5").unwrap();
        assert_eq!(p.len(), 1 + 3 + 2 + 1);
        assert_eq!(p[1], Point::Histogram);
        assert_eq!(p[6], Point::Float(5.0));
    }

    #[test]
    fn parses_series_descriptors() {
        let (l, v) = parse_series_line(r#"http_requests{job="api", instance='0'} 1 2"#).unwrap();
        assert_eq!(l.to_string(), r#"http_requests{instance="0", job="api"}"#);
        assert_eq!(v.len(), 2);
        let (l, _) = parse_series_line(r#"{__name__="m", a="x,y}"} 1"#).unwrap();
        assert_eq!(l.get("a"), Some("x,y}"));
        assert_eq!(l.metric_name(), Some("m"));
        let l = parse_metric(r#"{"a.b", "c d"="e"}"#).unwrap();
        assert_eq!(l.metric_name(), Some("a.b"));
        assert_eq!(l.get("c d"), Some("e"));
        assert!(parse_metric("m{a=~\"x\"}").is_err());
        assert_eq!(
            parse_metric("expect{}").unwrap().metric_name(),
            Some("expect")
        );
    }

    #[test]
    fn quotes_hide_separators_from_every_scan() {
        // An escaped quote, a backtick string (no escapes) and '=' inside quotes.
        let l = parse_metric(r#"m{a="x\",}=", b=`y\`, "c=d"='e,}'}"#).unwrap();
        assert_eq!(l.get("a"), Some("x\",}="));
        assert_eq!(l.get("b"), Some("y\\"));
        assert_eq!(l.get("c=d"), Some("e,}"));
        let err = parse_metric(r#"m{a="x}"#).unwrap_err();
        assert!(err.to_string().contains("unclosed '{'"), "{err}");
        assert_eq!(split_items("a,'b,c',d").ok(), Some(vec!["a", "'b,c'", "d"]));
        let err = split_items("a,'b").unwrap_err();
        assert!(err.to_string().contains("unterminated string"), "{err}");
        assert_eq!(find_unquoted_eq("'a=b'=c"), Some(5));
        assert_eq!(find_unquoted_eq("'a=b"), None);
    }
}
