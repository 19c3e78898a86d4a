//! Alertmanager's label matchers: `name="value"`, `!=`, `=~`, `!~`.
//!
//! Parsing follows Alertmanager's matchers parser (v0.34, fallback mode): the
//! UTF-8 parser first (`{a="b", c=~"d"}`, braces optional, values quoted with Go
//! escapes or bare, a trailing comma allowed), then the classic one
//! (`name=value` with the rest of the line as the value). Regexes are anchored
//! (`^(?:re)$`). A missing label matches as the empty string.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::labels::Labels;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regex => "=~",
            MatchType::NotRegex => "!~",
        }
    }
    pub fn is_regex(self) -> bool {
        matches!(self, MatchType::Regex | MatchType::NotRegex)
    }
    pub fn is_equal(self) -> bool {
        matches!(self, MatchType::Equal | MatchType::Regex)
    }
    pub fn from_flags(is_regex: bool, is_equal: bool) -> Self {
        match (is_regex, is_equal) {
            (false, true) => MatchType::Equal,
            (false, false) => MatchType::NotEqual,
            (true, true) => MatchType::Regex,
            (true, false) => MatchType::NotRegex,
        }
    }
}

impl fmt::Display for MatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One matcher. Regex matchers hold their compiled, anchored regex.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchType,
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}
impl Eq for Matcher {}

impl Matcher {
    pub fn new(
        name: impl Into<String>,
        op: MatchType,
        value: impl Into<String>,
    ) -> Result<Self, String> {
        let name = name.into();
        let value = value.into();
        if name.is_empty() {
            return Err("label name must not be empty".into());
        }
        let re = if op.is_regex() {
            Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                format!("invalid regular expression {value:?}: {}", regex_reason(&e))
            })?)
        } else {
            None
        };
        Ok(Self {
            name,
            op,
            value,
            re,
        })
    }

    pub fn matches_value(&self, v: &str) -> bool {
        match (self.op, &self.re) {
            (MatchType::Equal, _) => v == self.value,
            (MatchType::NotEqual, _) => v != self.value,
            (MatchType::Regex, Some(re)) => re.is_match(v),
            (MatchType::NotRegex, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }

    /// Whether `labels` satisfies this matcher (a missing label counts as "").
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).unwrap_or(""))
    }
}

impl fmt::Display for Matcher {
    /// Alertmanager's notation: `name="value"` with the value escaped, the name
    /// quoted only when it is not a plain label name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if crate::labels::valid_label_name(&self.name) {
            f.write_str(&self.name)?;
        } else {
            write!(f, "\"{}\"", escape(&self.name))?;
        }
        write!(f, "{}\"{}\"", self.op, escape(&self.value))
    }
}

/// The regex crate's syntax errors span several lines (the pattern, a caret,
/// the reason); a located config error wants one.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error: ").to_string())
        .unwrap_or(text)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A conjunction of matchers (all must match).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matchers(pub Vec<Matcher>);

impl Matchers {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|m| m.matches(labels))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Sorted as Alertmanager sorts a route's matchers (name, value, type), for route keys.
    pub fn sorted(mut self) -> Self {
        self.0
            .sort_by(|a, b| (&a.name, &a.value, a.op).cmp(&(&b.name, &b.value, b.op)));
        self
    }
    /// Parses and concatenates each line (the form of a config's `matchers:` list).
    pub fn parse_lines<S: AsRef<str>>(lines: &[S]) -> Result<Self, String> {
        let mut out = Vec::new();
        for l in lines {
            out.extend(parse_matchers(l.as_ref())?.0);
        }
        Ok(Matchers(out))
    }
}

impl fmt::Display for Matchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

/// Parses one or more matchers: `{a="b", c=~"d"}` or `a="b", c=~"d"` or the
/// classic single `a=b c` (value is the rest of the line).
pub fn parse_matchers(input: &str) -> Result<Matchers, String> {
    match parse_utf8(input) {
        Ok(m) => Ok(m),
        Err(utf8_err) => match parse_classic(input) {
            Ok(m) => Ok(Matchers(vec![m])),
            Err(_) => Err(format!("invalid matcher {input:?}: {utf8_err}")),
        },
    }
}

/// Parses exactly one matcher.
pub fn parse_matcher(input: &str) -> Result<Matcher, String> {
    let ms = parse_matchers(input)?;
    match ms.0.len() {
        1 => Ok(ms.0.into_iter().next().expect("one matcher")),
        n => Err(format!("expected one matcher in {input:?}, found {n}")),
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Open,
    Close,
    Comma,
    Op(MatchType),
    Quoted(String),
    Bare(String),
}

fn is_reserved(c: char) -> bool {
    c.is_whitespace() || "{}!=~,\\\"'`".contains(c)
}

fn lex(input: &str) -> Result<Vec<(Tok, usize)>, String> {
    let mut toks = Vec::new();
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '{' => {
                toks.push((Tok::Open, pos));
                i += 1;
            }
            '}' => {
                toks.push((Tok::Close, pos));
                i += 1;
            }
            ',' => {
                toks.push((Tok::Comma, pos));
                i += 1;
            }
            '=' | '!' => {
                let next = chars.get(i + 1).map(|x| x.1);
                let (op, len) = match (c, next) {
                    ('=', Some('~')) => (MatchType::Regex, 2),
                    ('=', _) => (MatchType::Equal, 1),
                    ('!', Some('=')) => (MatchType::NotEqual, 2),
                    ('!', Some('~')) => (MatchType::NotRegex, 2),
                    _ => {
                        return Err(format!(
                        "unexpected {c:?} at offset {pos}: expected an operator (=, !=, =~, !~)"
                    ))
                    }
                };
                toks.push((Tok::Op(op), pos));
                i += len;
            }
            '"' => {
                let mut s = String::new();
                let mut j = i + 1;
                let mut closed = false;
                while j < chars.len() {
                    let ch = chars[j].1;
                    if ch == '\\' {
                        let esc = chars.get(j + 1).map(|x| x.1).ok_or_else(|| {
                            format!("unterminated escape at offset {}", chars[j].0)
                        })?;
                        match esc {
                            'n' => s.push('\n'),
                            't' => s.push('\t'),
                            'r' => s.push('\r'),
                            '\\' => s.push('\\'),
                            '"' => s.push('"'),
                            '\'' => s.push('\''),
                            other => {
                                // Go keeps unknown escapes as errors; regexes need `\.` etc. to
                                // be written `\\.`. Be lenient like the classic parser: keep both.
                                s.push('\\');
                                s.push(other);
                            }
                        }
                        j += 2;
                    } else if ch == '"' {
                        closed = true;
                        j += 1;
                        break;
                    } else {
                        s.push(ch);
                        j += 1;
                    }
                }
                if !closed {
                    return Err(format!(
                        "unterminated quoted string starting at offset {pos}"
                    ));
                }
                toks.push((Tok::Quoted(s), pos));
                i = j;
            }
            c if is_reserved(c) => return Err(format!("unexpected {c:?} at offset {pos}")),
            _ => {
                let mut s = String::new();
                while i < chars.len() && !is_reserved(chars[i].1) {
                    s.push(chars[i].1);
                    i += 1;
                }
                toks.push((Tok::Bare(s), pos));
            }
        }
    }
    Ok(toks)
}

fn parse_utf8(input: &str) -> Result<Matchers, String> {
    let toks = lex(input)?;
    let mut it = toks.into_iter().peekable();
    let braced = matches!(it.peek(), Some((Tok::Open, _)));
    if braced {
        it.next();
    }
    let mut out = Vec::new();
    loop {
        match it.next() {
            None if !braced => break,
            None => return Err("missing closing '}'".into()),
            Some((Tok::Close, pos)) => {
                if !braced {
                    return Err(format!("unexpected '}}' at offset {pos}"));
                }
                if let Some((_, p)) = it.next() {
                    return Err(format!("unexpected input after '}}' at offset {p}"));
                }
                break;
            }
            Some((Tok::Quoted(name) | Tok::Bare(name), _)) => {
                let op = match it.next() {
                    Some((Tok::Op(op), _)) => op,
                    Some((_, p)) => {
                        return Err(format!(
                            "expected an operator (=, !=, =~, !~) after {name:?} at offset {p}"
                        ))
                    }
                    None => {
                        return Err(format!(
                            "expected an operator (=, !=, =~, !~) after {name:?}"
                        ))
                    }
                };
                let value = match it.next() {
                    Some((Tok::Quoted(v) | Tok::Bare(v), _)) => v,
                    Some((_, p)) => return Err(format!("expected a label value at offset {p}")),
                    None => return Err(format!("expected a label value after {name:?}{op}")),
                };
                out.push(Matcher::new(name, op, value)?);
                match it.next() {
                    Some((Tok::Comma, _)) => {}
                    Some((Tok::Close, _)) if braced => {
                        if let Some((_, p)) = it.next() {
                            return Err(format!("unexpected input after '}}' at offset {p}"));
                        }
                        break;
                    }
                    None if !braced => break,
                    None => return Err("missing closing '}'".into()),
                    Some((_, p)) => return Err(format!("expected ',' or '}}' at offset {p}")),
                }
            }
            Some((_, p)) => return Err(format!("expected a label name at offset {p}")),
        }
    }
    Ok(Matchers(out))
}

/// The classic parser: `name op value`, the value optionally in double quotes.
fn parse_classic(input: &str) -> Result<Matcher, String> {
    let s = input.trim();
    let s = s
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(s)
        .trim();
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let name = &s[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("bad matcher format: {input:?}"));
    }
    let rest = s[name_end..].trim_start();
    let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (MatchType::Regex, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (MatchType::NotEqual, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (MatchType::NotRegex, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (MatchType::Equal, r)
    } else {
        return Err(format!("bad matcher format: {input:?}"));
    };
    let mut value = rest.trim();
    let mut expect_trailing_quote = false;
    if let Some(v) = value.strip_prefix('"') {
        value = v;
        expect_trailing_quote = true;
    }
    // Classic unescaping: \" → ", \\ → \, \n → newline; a bare quote only closes the value.
    let mut v = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some() => match chars.next() {
                Some('n') => v.push('\n'),
                Some(o @ ('"' | '\\')) => v.push(o),
                Some(o) => {
                    v.push('\\');
                    v.push(o);
                }
                None => {}
            },
            '"' => {
                if !expect_trailing_quote || chars.peek().is_some() {
                    return Err(format!(
                        "matcher value contains an unescaped double quote: {input:?}"
                    ));
                }
                expect_trailing_quote = false;
            }
            c => v.push(c),
        }
    }
    if expect_trailing_quote {
        return Err(format!(
            "matcher value is missing its closing quote: {input:?}"
        ));
    }
    Matcher::new(name, op, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn parses_the_forms_alertmanager_accepts() {
        let m = parse_matchers(r#"{a="b", c=~"d.*", e!="f", g!~"h|i",}"#).unwrap();
        assert_eq!(m.0.len(), 4);
        assert_eq!(m.to_string(), r#"{a="b",c=~"d.*",e!="f",g!~"h|i"}"#);
        let m = parse_matchers("severity=critical").unwrap();
        assert_eq!(
            (m.0[0].name.as_str(), m.0[0].op, m.0[0].value.as_str()),
            ("severity", MatchType::Equal, "critical")
        );
        let m = parse_matchers(r#"service = "netra backend""#).unwrap();
        assert_eq!(m.0[0].value, "netra backend");
        // Classic fallback: an unquoted value with spaces is the rest of the line.
        let m = parse_matchers("summary=disk is full").unwrap();
        assert_eq!(m.0[0].value, "disk is full");
        // Quoted names and escaped quotes.
        let m = parse_matchers(r#"{"foo bar"="x\"y"}"#).unwrap();
        assert_eq!(
            (m.0[0].name.as_str(), m.0[0].value.as_str()),
            ("foo bar", "x\"y")
        );
        assert_eq!(parse_matchers("{}").unwrap().0.len(), 0);
        assert_eq!(parse_matchers(r#"a="""#).unwrap().0[0].value, "");
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for bad in ["{a=\"b\"", "a", "=b", "a=~\"(\"", "{a=\"b\"} x", "a==\"b\""] {
            let e = parse_matchers(bad);
            assert!(e.is_err(), "{bad:?} parsed as {:?}", e);
        }
        let e = parse_matchers("a=~\"(\"").unwrap_err();
        assert!(e.contains("regular expression"), "{e}");
    }

    #[test]
    fn regexes_are_anchored_and_missing_labels_are_empty() {
        let m = parse_matcher(r#"service=~"back.*""#).unwrap();
        assert!(m.matches(&l(&[("service", "backend")])));
        assert!(!m.matches(&l(&[("service", "the-backend")])));
        let m = parse_matcher(r#"team!="ops""#).unwrap();
        assert!(
            m.matches(&l(&[])),
            "a missing label is \"\", which is != ops"
        );
        let m = parse_matcher(r#"team=~"""#).unwrap();
        assert!(m.matches(&l(&[])));
        let m = parse_matcher(r#"team!~"a|b""#).unwrap();
        assert!(!m.matches(&l(&[("team", "a")])));
        assert!(m.matches(&l(&[("team", "ab")])));
        let m = parse_matcher("a=b");
        assert!(m.is_ok());
        assert!(parse_matcher("a=b, c=d").is_err());
    }
}
