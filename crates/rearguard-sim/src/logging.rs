//! Cloud Logging v2 `entries.list` (`POST /v2/entries:list`), shaped as `logging-v2.json`.
//!
//! Entries become visible `ingest_delay` after their timestamp. The filter
//! language subset: comparisons `FIELD OP VALUE` with `=`, `!=`, `<`, `<=`, `>`,
//! `>=`, `:` (has), `=~`, `!~` over any field path of the entry
//! (`resource.type`, `resource.labels.service_name`, `labels.k`,
//! `jsonPayload.message`, `logName`, ...; `severity` compares by level,
//! `timestamp` by time), joined by `AND` (or juxtaposition), `OR`, `NOT`/`-`,
//! parentheses, and bare values (a search in every field). Paging may answer
//! empty pages with a `nextPageToken` (configurable), as Logging does while a
//! search runs; `entries.list` is limited to 60 calls a minute per quota
//! project (configurable), answered 429 beyond with the wait in
//! `RetryInfo.retryDelay` and no `Retry-After` header.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Map, Value};

use super::util::{parse_timestamp, random_hex, timestamp, ApiError};
use rearguard_clock::TimestampMs;

pub const SEVERITIES: &[&str] = &[
    "DEFAULT",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "CRITICAL",
    "ALERT",
    "EMERGENCY",
];

fn severity_level(s: &str) -> Option<usize> {
    let up = s.to_ascii_uppercase();
    SEVERITIES.iter().position(|x| *x == up)
}

/// An entry to write through the control API.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntrySpec {
    /// `projects/P/logs/LOG_ID` (LOG_ID URL-encoded, e.g. `run.googleapis.com%2Fstderr`).
    pub log_name: String,
    pub resource_type: String,
    pub resource_labels: BTreeMap<String, String>,
    pub timestamp_ms: TimestampMs,
    /// One of [`SEVERITIES`].
    pub severity: String,
    pub text_payload: Option<String>,
    pub json_payload: Option<Value>,
    pub labels: BTreeMap<String, String>,
    /// An `HttpRequest` object as JSON.
    pub http_request: Option<Value>,
    /// Generated when `None`.
    pub insert_id: Option<String>,
}

impl LogEntrySpec {
    /// A Cloud Run revision's stderr line.
    pub fn cloud_run(
        project: &str,
        location: &str,
        service: &str,
        revision: &str,
        ts: TimestampMs,
        severity: &str,
        text: &str,
    ) -> Self {
        let resource_labels = [
            ("project_id", project),
            ("location", location),
            ("service_name", service),
            ("revision_name", revision),
            ("configuration_name", service),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self {
            log_name: format!("projects/{project}/logs/run.googleapis.com%2Fstderr"),
            resource_type: "cloud_run_revision".into(),
            resource_labels,
            timestamp_ms: ts,
            severity: severity.into(),
            text_payload: Some(text.into()),
            json_payload: None,
            labels: BTreeMap::from([("instanceId".to_string(), "00f46b9285".to_string())]),
            http_request: None,
            insert_id: None,
        }
    }

    /// The same entry with a JSON payload instead of text.
    pub fn with_json(mut self, payload: Value) -> Self {
        self.text_payload = None;
        self.json_payload = Some(payload);
        self
    }
}

struct Stored {
    ts: TimestampMs,
    insert_id: String,
    project: String,
    json: Value,
}

pub(crate) struct LoggingState {
    entries: Vec<Stored>,
    pub ingest_delay_ms: i64,
    /// Empty pages (with a token) answered before the first entries of each query.
    pub empty_pages: u32,
    /// `entries.list` calls allowed per project per minute; `None`: unlimited.
    pub quota_per_minute: Option<usize>,
    recent_calls: BTreeMap<String, VecDeque<TimestampMs>>,
}

impl Default for LoggingState {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            ingest_delay_ms: 0,
            empty_pages: 0,
            quota_per_minute: Some(60),
            recent_calls: BTreeMap::new(),
        }
    }
}

impl LoggingState {
    /// Stores an entry; returns its insertId.
    pub fn add(&mut self, now: TimestampMs, e: LogEntrySpec) -> Result<String, ApiError> {
        let project = e
            .log_name
            .strip_prefix("projects/")
            .and_then(|r| r.split('/').next())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ApiError::invalid_argument(format!(
                    "logName {:?} is not projects/P/logs/ID",
                    e.log_name
                ))
            })?
            .to_string();
        let severity = e.severity.to_ascii_uppercase();
        if severity_level(&severity).is_none() {
            return Err(ApiError::invalid_argument(format!(
                "unknown severity {:?}",
                e.severity
            )));
        }
        let insert_id = e.insert_id.clone().unwrap_or_else(|| random_hex(10));
        let mut j = Map::new();
        j.insert("insertId".into(), json!(insert_id));
        if let Some(t) = &e.text_payload {
            j.insert("textPayload".into(), json!(t));
        }
        if let Some(p) = &e.json_payload {
            j.insert("jsonPayload".into(), p.clone());
        }
        if let Some(h) = &e.http_request {
            j.insert("httpRequest".into(), h.clone());
        }
        j.insert(
            "resource".into(),
            json!({"type": e.resource_type, "labels": e.resource_labels}),
        );
        j.insert("timestamp".into(), json!(timestamp(e.timestamp_ms)));
        if severity != "DEFAULT" {
            j.insert("severity".into(), json!(severity));
        }
        if !e.labels.is_empty() {
            j.insert("labels".into(), json!(e.labels));
        }
        j.insert("logName".into(), json!(e.log_name));
        j.insert(
            "receiveTimestamp".into(),
            json!(timestamp(
                e.timestamp_ms.max(now) + self.ingest_delay_ms.min(60_000) / 4 + 7
            )),
        );
        self.entries.push(Stored {
            ts: e.timestamp_ms,
            insert_id: insert_id.clone(),
            project,
            json: Value::Object(j),
        });
        Ok(insert_id)
    }

    /// Stores an entry given whole as Logging's JSON (`logName`, `timestamp`,
    /// `protoPayload`, `operation`, ...), as the audit log writes them
    /// (`super::audit`); an `insertId` is added when missing.
    pub fn add_json(&mut self, mut entry: Value) -> Result<String, ApiError> {
        let log_name = entry["logName"].as_str().unwrap_or("").to_string();
        let project = log_name
            .strip_prefix("projects/")
            .and_then(|r| r.split('/').next())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ApiError::invalid_argument(format!(
                    "logName {log_name:?} is not projects/P/logs/ID"
                ))
            })?
            .to_string();
        let ts = entry["timestamp"]
            .as_str()
            .and_then(parse_timestamp)
            .ok_or_else(|| ApiError::invalid_argument("the entry has no RFC 3339 timestamp"))?;
        if entry["insertId"].as_str().is_none() {
            entry["insertId"] = json!(random_hex(10));
        }
        let insert_id = entry["insertId"].as_str().unwrap_or("").to_string();
        self.entries.push(Stored {
            ts,
            insert_id: insert_id.clone(),
            project,
            json: entry,
        });
        Ok(insert_id)
    }

    /// `entries.list`, charged to one default quota project.
    #[cfg(test)]
    pub fn list(&mut self, now: TimestampMs, body: &Value) -> Result<Value, ApiError> {
        self.list_as(now, body, None)
    }

    /// `entries.list` with its quota charged to `quota_project`.
    pub fn list_as(
        &mut self,
        now: TimestampMs,
        body: &Value,
        quota_project: Option<&str>,
    ) -> Result<Value, ApiError> {
        let obj = body.as_object().ok_or_else(|| {
            ApiError::invalid_argument("Invalid JSON payload received: expected an object.")
        })?;
        for k in obj.keys() {
            if ![
                "filter",
                "orderBy",
                "pageSize",
                "pageToken",
                "projectIds",
                "resourceNames",
            ]
            .contains(&k.as_str())
            {
                return Err(ApiError::invalid_argument(format!(
                    "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
                )));
            }
        }
        let mut projects = Vec::new();
        for r in obj
            .get("resourceNames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or("");
            match r.strip_prefix("projects/").filter(|p| !p.is_empty() && !p.contains('/')) {
                Some(p) => projects.push(p.to_string()),
                None => {
                    return Err(ApiError::invalid_argument(format!(
                        "Field resourceNames had an invalid value of \"{r}\": the fake knows only projects/PROJECT."
                    )))
                }
            }
        }
        for p in obj
            .get("projectIds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            projects.extend(p.as_str().map(String::from));
        }
        if projects.is_empty() {
            return Err(ApiError::invalid_argument(
                "Field resourceNames had an invalid value: at least one resource name is required.",
            ));
        }
        // Quota is charged to the quota project of the call (the caller's own
        // project, or the one `x-goog-user-project` names), not to each
        // resource read: "the quota project is the project used for quota and
        // billing" (https://cloud.google.com/docs/quotas/quota-project); Logging's
        // limit is 60 entries.list calls a minute per project
        // (https://cloud.google.com/logging/quotas#api-limits). Beyond it, a 429
        // with ErrorInfo and RetryInfo and no Retry-After header.
        if let Some(limit) = self.quota_per_minute {
            let consumer = quota_project.unwrap_or("default");
            let q = self.recent_calls.entry(consumer.to_string()).or_default();
            while q.front().is_some_and(|t| *t <= now - 60_000) {
                q.pop_front();
            }
            if q.len() >= limit {
                let free_at = q.front().map_or(now, |t| t + 60_000);
                return Err(ApiError::new(
                    429,
                    "RESOURCE_EXHAUSTED",
                    format!("Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service 'logging.googleapis.com' for consumer 'project_number:{consumer}'."),
                )
                .with_detail(json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMIT_EXCEEDED",
                    "domain": "googleapis.com",
                    "metadata": {
                        "service": "logging.googleapis.com",
                        "consumer": format!("projects/{consumer}"),
                        "quota_metric": "logging.googleapis.com/read_requests",
                        "quota_limit": "ReadRequestsPerMinutePerProject",
                    },
                }))
                .with_retry_delay(free_at - now));
            }
            q.push_back(now);
        }
        let filter_text = obj.get("filter").and_then(Value::as_str).unwrap_or("");
        let filter = parse(filter_text)?;
        let desc = match obj.get("orderBy").and_then(Value::as_str).map(str::trim) {
            None | Some("") | Some("timestamp asc") => false,
            Some("timestamp desc") => true,
            Some(o) => {
                return Err(ApiError::invalid_argument(format!(
                    "Field orderBy had an invalid value of \"{o}\": only \"timestamp asc\" and \"timestamp desc\" are supported."
                )))
            }
        };
        let page_size = match obj.get("pageSize") {
            None => 50,
            Some(v) => match v.as_i64() {
                Some(n) if n < 0 => {
                    return Err(ApiError::invalid_argument("pageSize must not be negative"))
                }
                Some(0) => 50,
                Some(n) => (n as usize).min(1000),
                None => {
                    return Err(ApiError::invalid_argument(format!(
                        "Invalid value at 'page_size' (TYPE_INT32), {v}"
                    )))
                }
            },
        };
        let key = format!("{projects:?}|{filter_text}|{desc}");
        let (offset, empties_left) = match obj
            .get("pageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            Some(t) => parse_token(t, &key)?,
            None => (0, self.empty_pages),
        };
        let next = |offset: usize, empties: u32| json!(format_token(offset, empties, &key));
        if empties_left > 0 {
            return Ok(json!({"nextPageToken": next(offset, empties_left - 1)}));
        }
        let visible_until = now - self.ingest_delay_ms;
        let mut matched: Vec<&Stored> = self
            .entries
            .iter()
            .filter(|e| e.ts <= visible_until && projects.contains(&e.project))
            .filter(|e| filter.as_ref().is_none_or(|f| f.eval(&e.json)))
            .collect();
        matched.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.insert_id.cmp(&b.insert_id)));
        if desc {
            matched.reverse();
        }
        let page: Vec<Value> = matched
            .iter()
            .skip(offset)
            .take(page_size)
            .map(|e| e.json.clone())
            .collect();
        let mut out = Map::new();
        if !page.is_empty() {
            out.insert("entries".into(), json!(page));
        }
        if offset + page_size < matched.len() {
            out.insert("nextPageToken".into(), next(offset + page_size, 0));
        }
        Ok(Value::Object(out))
    }
}

fn format_token(offset: usize, empties: u32, key: &str) -> String {
    super::util::page_token(offset * 1000 + empties as usize, key)
}

fn parse_token(t: &str, key: &str) -> Result<(usize, u32), ApiError> {
    let n = super::util::parse_page_token(t, key)?;
    Ok((n / 1000, (n % 1000) as u32))
}

// ---- the filter language ---------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Op(&'static str),
    Str(String),
    Word(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '(' {
            out.push(Tok::LParen);
            i += 1;
            continue;
        }
        if c == ')' {
            out.push(Tok::RParen);
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated quoted string".into()),
                    Some('\\') => {
                        if let Some(n) = chars.get(i + 1) {
                            v.push(*n);
                        }
                        i += 2;
                    }
                    Some(q) if *q == c => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        v.push(*x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if let Some(op) = [">=", "<=", "!=", "=~", "!~"]
            .into_iter()
            .find(|o| *o == two)
        {
            out.push(Tok::Op(op));
            i += 2;
            continue;
        }
        if let Some(op) = ["=", "<", ">", ":"].into_iter().find(|o| o.starts_with(c)) {
            out.push(Tok::Op(op));
            i += 1;
            continue;
        }
        if c == '-'
            && matches!(
                out.last(),
                None | Some(
                    Tok::LParen
                        | Tok::And
                        | Tok::Or
                        | Tok::Not
                        | Tok::RParen
                        | Tok::Str(_)
                        | Tok::Word(_)
                )
            )
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_alphabetic() || *n == '(')
        {
            out.push(Tok::Not);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !"()=<>!:\"'".contains(chars[i]) {
            i += 1;
        }
        if i == start {
            return Err(format!("unexpected character {c:?}"));
        }
        let w: String = chars[start..i].iter().collect();
        out.push(match w.as_str() {
            "AND" => Tok::And,
            "OR" => Tok::Or,
            "NOT" => Tok::Not,
            _ => Tok::Word(w),
        });
    }
    Ok(out)
}

#[derive(Debug)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(String, &'static str, String),
    Search(String),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::Or(v)
        })
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.not()?];
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                    v.push(self.not()?);
                }
                None | Some(Tok::Or) | Some(Tok::RParen) => break,
                Some(_) => v.push(self.not()?),
            }
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::And(v)
        })
    }
    fn not(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                if self.next() != Some(Tok::RParen) {
                    return Err("missing )".into());
                }
                Ok(e)
            }
            Some(Tok::Word(w)) => {
                if let Some(Tok::Op(op)) = self.peek().cloned() {
                    self.pos += 1;
                    let value = match self.next() {
                        Some(Tok::Str(s)) | Some(Tok::Word(s)) => s,
                        other => {
                            return Err(format!("expected a value after {w}{op}, found {other:?}"))
                        }
                    };
                    Ok(Expr::Cmp(w, op, value))
                } else {
                    Ok(Expr::Search(w))
                }
            }
            Some(Tok::Str(s)) => Ok(Expr::Search(s)),
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

fn parse(filter: &str) -> Result<Option<Expr>, ApiError> {
    let bad = |why: String| {
        ApiError::invalid_argument(format!("Unparseable filter: {why} (in \"{filter}\")"))
    };
    let toks = tokenize(filter).map_err(bad)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.or().map_err(bad)?;
    if p.pos < p.toks.len() {
        return Err(bad(format!("unexpected {:?}", p.toks[p.pos])));
    }
    if let Some(e) = check(&e) {
        return Err(bad(e));
    }
    Ok(Some(e))
}

/// Validates values that must parse (timestamps, severities, regexes).
fn check(e: &Expr) -> Option<String> {
    match e {
        Expr::And(v) | Expr::Or(v) => v.iter().find_map(check),
        Expr::Not(x) => check(x),
        Expr::Search(_) => None,
        Expr::Cmp(f, op, v) => {
            if f == "timestamp" && *op != ":" && parse_timestamp(v).is_none() {
                return Some(format!(
                    "invalid timestamp {v:?}: use RFC 3339, e.g. \"2024-05-01T00:00:00Z\""
                ));
            }
            if f == "severity" && *op != ":" && !op.contains('~') && severity_level(v).is_none() {
                return Some(format!("invalid severity {v:?}"));
            }
            if op.contains('~') && regex::Regex::new(v).is_err() {
                return Some(format!("invalid regular expression {v:?}"));
            }
            None
        }
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in split_path(path) {
        cur = cur.get(part.as_str())?;
    }
    Some(cur)
}

/// `labels."a/b".c` → [labels, a/b, c]
fn split_path(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in path.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Expr {
    fn eval(&self, entry: &Value) -> bool {
        match self {
            Expr::And(v) => v.iter().all(|e| e.eval(entry)),
            Expr::Or(v) => v.iter().any(|e| e.eval(entry)),
            Expr::Not(e) => !e.eval(entry),
            Expr::Search(s) => entry.to_string().to_lowercase().contains(&s.to_lowercase()),
            Expr::Cmp(field, op, want) => {
                let field = field.as_str();
                let got = if field == "severity" {
                    Some(entry.get("severity").cloned().unwrap_or(json!("DEFAULT")))
                } else {
                    lookup(entry, field).cloned()
                };
                let Some(got) = got else {
                    return *op == "!=" || *op == "!~";
                };
                if *op == ":" {
                    if want == "*" {
                        return true;
                    }
                    return match &got {
                        Value::Object(_) | Value::Array(_) => got
                            .to_string()
                            .to_lowercase()
                            .contains(&want.to_lowercase()),
                        g => as_text(g).to_lowercase().contains(&want.to_lowercase()),
                    };
                }
                if op.contains('~') {
                    let m = regex::Regex::new(want).is_ok_and(|r| r.is_match(&as_text(&got)));
                    return (*op == "=~") == m;
                }
                let ord = match field {
                    "severity" => severity_level(&as_text(&got))
                        .zip(severity_level(want))
                        .map(|(a, b)| a.cmp(&b)),
                    "timestamp" | "receiveTimestamp" => parse_timestamp(&as_text(&got))
                        .zip(parse_timestamp(want))
                        .map(|(a, b)| a.cmp(&b)),
                    _ => match (as_text(&got).parse::<f64>(), want.parse::<f64>()) {
                        (Ok(a), Ok(b)) => a.partial_cmp(&b),
                        _ => Some(as_text(&got).cmp(want)),
                    },
                };
                let Some(ord) = ord else { return false };
                use std::cmp::Ordering::*;
                match *op {
                    "=" => ord == Equal,
                    "!=" => ord != Equal,
                    "<" => ord == Less,
                    "<=" => ord != Greater,
                    ">" => ord == Greater,
                    ">=" => ord != Less,
                    _ => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn state() -> LoggingState {
        let mut l = LoggingState::default();
        for i in 0..10 {
            let sev = if i % 2 == 0 { "ERROR" } else { "INFO" };
            let rev = if i < 5 {
                "backend-00001-abc"
            } else {
                "backend-00002-xyz"
            };
            l.add(
                T0,
                LogEntrySpec::cloud_run(
                    "p",
                    "us-central1",
                    "backend",
                    rev,
                    T0 + i * 1000,
                    sev,
                    &format!("line {i}"),
                ),
            )
            .unwrap();
        }
        l
    }

    fn list(l: &mut LoggingState, now: i64, body: Value) -> Value {
        l.list(now, &body).unwrap()
    }

    #[test]
    fn filter_subset_and_order() {
        let mut l = state();
        let f = format!(
            r#"resource.type="cloud_run_revision" AND resource.labels.service_name="backend" AND severity>=ERROR AND timestamp>="{}" AND timestamp<"{}""#,
            timestamp(T0 + 2000),
            timestamp(T0 + 8000)
        );
        let v = list(
            &mut l,
            T0 + 60_000,
            json!({"resourceNames": ["projects/p"], "filter": f, "orderBy": "timestamp asc"}),
        );
        let texts: Vec<&str> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["textPayload"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["line 2", "line 4", "line 6"]);
        let v = list(
            &mut l,
            T0 + 60_000,
            json!({"resourceNames": ["projects/p"], "filter": "(resource.labels.revision_name=\"backend-00002-xyz\" OR textPayload:\"line 0\") -severity=INFO"}),
        );
        assert_eq!(v["entries"].as_array().unwrap().len(), 3);
        let e = l
            .list(
                T0,
                &json!({"resourceNames": ["projects/p"], "filter": "timestamp>=\"yesterday\""}),
            )
            .unwrap_err();
        assert_eq!(e.code, 400);
        let e = l
            .list(T0, &json!({"resourceNames": ["projects/p"], "bogus": 1}))
            .unwrap_err();
        assert!(e.message.contains("Unknown name"));
    }

    #[test]
    fn paging_with_empty_pages_and_delay() {
        let mut l = state();
        l.empty_pages = 2;
        l.ingest_delay_ms = 5_000;
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut empty = 0;
        loop {
            let mut body = json!({"resourceNames": ["projects/p"], "pageSize": 3});
            if let Some(t) = &token {
                body["pageToken"] = json!(t);
            }
            let v = list(&mut l, T0 + 9_000, body);
            match v["entries"].as_array() {
                Some(es) => seen.extend(
                    es.iter()
                        .map(|e| e["insertId"].as_str().unwrap().to_string()),
                ),
                None => empty += 1,
            }
            match v["nextPageToken"].as_str() {
                Some(t) => token = Some(t.into()),
                None => break,
            }
        }
        assert_eq!(empty, 2);
        assert_eq!(seen.len(), 5, "only entries 5 s old are visible");
    }

    #[test]
    fn quota_of_sixty_a_minute() {
        let mut l = state();
        for _ in 0..60 {
            l.list(T0, &json!({"resourceNames": ["projects/p"]}))
                .unwrap();
        }
        let e = l
            .list(T0 + 59_000, &json!({"resourceNames": ["projects/p"]}))
            .unwrap_err();
        assert_eq!((e.code, e.status), (429, "RESOURCE_EXHAUSTED"));
        assert!(l
            .list(T0 + 60_000, &json!({"resourceNames": ["projects/p"]}))
            .is_ok());
    }

    #[test]
    fn quota_is_charged_to_the_quota_project_not_the_resource() {
        let mut l = state();
        for i in 0..60 {
            let r = if i % 2 == 0 {
                "projects/p"
            } else {
                "projects/other"
            };
            l.list_as(T0, &json!({"resourceNames": [r]}), Some("caller"))
                .unwrap();
        }
        // Another resource does not get a fresh quota.
        let e = l
            .list_as(
                T0 + 30_000,
                &json!({"resourceNames": ["projects/third"]}),
                Some("caller"),
            )
            .unwrap_err();
        assert_eq!((e.code, e.status), (429, "RESOURCE_EXHAUSTED"));
        // The wait is in RetryInfo: until the oldest call leaves the minute.
        let body = e.body();
        let details = body["error"]["details"].as_array().unwrap();
        let retry = details
            .iter()
            .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
            .unwrap();
        assert_eq!(retry["retryDelay"], "30.000s");
        assert!(details.iter().any(|d| d["reason"] == "RATE_LIMIT_EXCEEDED"));
        // Another quota project has its own.
        assert!(l
            .list_as(
                T0 + 30_000,
                &json!({"resourceNames": ["projects/p"]}),
                Some("someone-else")
            )
            .is_ok());
    }
}
