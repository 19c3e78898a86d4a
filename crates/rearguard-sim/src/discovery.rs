//! Checks JSON against the schemas of Google's discovery documents
//! (`../shared/gcp-discovery/*.json`, read at run time, never copied):
//! every field must exist in the schema, with the right JSON type and format
//! (`int64` as a string, `google-datetime` as RFC 3339, `google-duration` as
//! `"1.5s"`), and enum values must be listed. Used by the fake's own tests and
//! by the client's tests to check every request body and query it sends.

use std::fmt;
use std::path::Path;

use serde_json::Value;

/// One place where a value disagrees with its schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    /// JSON path, e.g. `$.traffic[0].percent`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read discovery document {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("discovery document {path} is not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("discovery document {path} has no schemas or resources")]
    Shape { path: String },
    #[error("no method {0} in the discovery documents")]
    NoMethod(String),
}

/// One discovery document.
pub struct Discovery {
    doc: Value,
}

impl Discovery {
    pub fn load(path: &Path) -> Result<Self, DiscoveryError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DiscoveryError::Read {
            path: p.clone(),
            source,
        })?;
        let doc: Value = serde_json::from_str(&text).map_err(|source| DiscoveryError::Json {
            path: p.clone(),
            source,
        })?;
        if !doc.get("schemas").is_some_and(Value::is_object)
            || !doc.get("resources").is_some_and(Value::is_object)
        {
            return Err(DiscoveryError::Shape { path: p });
        }
        Ok(Self { doc })
    }

    /// The API id, e.g. `run:v2`.
    pub fn id(&self) -> &str {
        self.doc.get("id").and_then(Value::as_str).unwrap_or("")
    }

    /// A method by its discovery id (`run.projects.locations.services.patch`).
    pub fn method(&self, id: &str) -> Option<&Value> {
        fn find<'a>(res: &'a Value, id: &str) -> Option<&'a Value> {
            for r in res.as_object()?.values() {
                if let Some(m) = r.get("methods").and_then(Value::as_object) {
                    if let Some(found) = m
                        .values()
                        .find(|m| m.get("id").and_then(Value::as_str) == Some(id))
                    {
                        return Some(found);
                    }
                }
                if let Some(found) = r.get("resources").and_then(|sub| find(sub, id)) {
                    return Some(found);
                }
            }
            None
        }
        find(&self.doc["resources"], id)
    }

    /// The request body schema name of a method, if it takes a body.
    pub fn request_schema(&self, method: &str) -> Option<&str> {
        self.method(method)?.get("request")?.get("$ref")?.as_str()
    }

    pub fn response_schema(&self, method: &str) -> Option<&str> {
        self.method(method)?.get("response")?.get("$ref")?.as_str()
    }

    /// Checks `value` against the schema named `schema` (e.g. `GoogleCloudRunV2Service`).
    pub fn validate(&self, schema: &str, value: &Value) -> Vec<Issue> {
        let mut issues = Vec::new();
        match self.doc["schemas"].get(schema) {
            Some(s) => self.check(s, value, "$", &mut issues),
            None => issues.push(Issue {
                path: "$".into(),
                message: format!("no schema {schema} in {}", self.id()),
            }),
        }
        issues
    }

    /// Checks a method's request body.
    pub fn validate_request(
        &self,
        method: &str,
        body: &Value,
    ) -> Result<Vec<Issue>, DiscoveryError> {
        let m = self
            .method(method)
            .ok_or_else(|| DiscoveryError::NoMethod(method.into()))?;
        Ok(
            match m
                .get("request")
                .and_then(|r| r.get("$ref"))
                .and_then(Value::as_str)
            {
                Some(schema) => self.validate(schema, body),
                None => vec![Issue {
                    path: "$".into(),
                    message: format!("{method} takes no request body"),
                }],
            },
        )
    }

    /// Checks a method's response body.
    pub fn validate_response(
        &self,
        method: &str,
        body: &Value,
    ) -> Result<Vec<Issue>, DiscoveryError> {
        let m = self
            .method(method)
            .ok_or_else(|| DiscoveryError::NoMethod(method.into()))?;
        Ok(
            match m
                .get("response")
                .and_then(|r| r.get("$ref"))
                .and_then(Value::as_str)
            {
                Some(schema) => self.validate(schema, body),
                None => Vec::new(),
            },
        )
    }

    /// Checks query parameters (`aggregation.alignmentPeriod=60s`, ...) against
    /// the method's parameters: each must exist, not be a path parameter,
    /// repeat only if `repeated`, and have the right type, format and enum value.
    pub fn validate_params(
        &self,
        method: &str,
        params: &[(String, String)],
    ) -> Result<Vec<Issue>, DiscoveryError> {
        let m = self
            .method(method)
            .ok_or_else(|| DiscoveryError::NoMethod(method.into()))?;
        let defs = m.get("parameters").and_then(Value::as_object);
        // Standard parameters every Google API accepts.
        let standard = self.doc.get("parameters").and_then(Value::as_object);
        let mut issues = Vec::new();
        for (i, (k, v)) in params.iter().enumerate() {
            let path = format!("?{k}");
            let Some(def) = defs
                .and_then(|d| d.get(k))
                .or_else(|| standard.and_then(|d| d.get(k)))
            else {
                issues.push(Issue {
                    path,
                    message: format!("{method} has no parameter {k}"),
                });
                continue;
            };
            if def.get("location").and_then(Value::as_str) == Some("path") {
                issues.push(Issue {
                    path,
                    message: "a path parameter must not be sent in the query".into(),
                });
                continue;
            }
            if !def
                .get("repeated")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                && params[..i].iter().any(|(k2, _)| k2 == k)
            {
                issues.push(Issue {
                    path: path.clone(),
                    message: "is not repeated but was given more than once".into(),
                });
            }
            let as_json = match def.get("type").and_then(Value::as_str) {
                Some("integer") => match v.parse::<i64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        issues.push(Issue {
                            path,
                            message: format!("{v:?} is not an integer"),
                        });
                        continue;
                    }
                },
                Some("boolean") => match v.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        issues.push(Issue {
                            path,
                            message: format!("{v:?} is not true or false"),
                        });
                        continue;
                    }
                },
                Some("number") => match v.parse::<f64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        issues.push(Issue {
                            path,
                            message: format!("{v:?} is not a number"),
                        });
                        continue;
                    }
                },
                _ => Value::String(v.clone()),
            };
            self.check(def, &as_json, &path, &mut issues);
        }
        Ok(issues)
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, issues: &mut Vec<Issue>) {
        let mut issue = |message: String| {
            issues.push(Issue {
                path: path.to_string(),
                message,
            })
        };
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match self.doc["schemas"].get(r) {
                Some(s) => return self.check(s, value, path, issues),
                None => return issue(format!("schema {r} not found")),
            }
        }
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
        let format = schema.get("format").and_then(Value::as_str);
        match ty {
            "any" => {}
            "object" => {
                let Some(obj) = value.as_object() else {
                    return issue(format!("expected an object, got {}", kind(value)));
                };
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                for (k, v) in obj {
                    let sub = format!("{path}.{k}");
                    match (props.and_then(|p| p.get(k)), additional) {
                        (Some(s), _) => self.check(s, v, &sub, issues),
                        (None, Some(a)) => self.check(a, v, &sub, issues),
                        (None, None) => issues.push(Issue {
                            path: sub,
                            message: "unknown field (not in the schema)".into(),
                        }),
                    }
                }
            }
            "array" => {
                let Some(arr) = value.as_array() else {
                    return issue(format!("expected an array, got {}", kind(value)));
                };
                if let Some(items) = schema.get("items") {
                    for (i, v) in arr.iter().enumerate() {
                        self.check(items, v, &format!("{path}[{i}]"), issues);
                    }
                }
            }
            "string" => {
                let Some(s) = value.as_str() else {
                    let hint = if matches!(format, Some("int64" | "uint64")) {
                        " (int64 travels as a JSON string)"
                    } else {
                        ""
                    };
                    return issue(format!("expected a string, got {}{hint}", kind(value)));
                };
                match format {
                    Some("int64") if s.parse::<i64>().is_err() => {
                        issue(format!("{s:?} is not an int64"))
                    }
                    Some("uint64") if s.parse::<u64>().is_err() => {
                        issue(format!("{s:?} is not a uint64"))
                    }
                    Some("google-datetime") if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                        issue(format!("{s:?} is not an RFC 3339 timestamp"))
                    }
                    Some("google-duration") if !is_duration(s) => {
                        issue(format!("{s:?} is not a duration like \"60s\""))
                    }
                    Some("byte") if !is_base64(s) => issue(format!("{s:?} is not base64")),
                    _ => {}
                }
                if let Some(e) = schema.get("enum").and_then(Value::as_array) {
                    if !e.iter().any(|x| x.as_str() == Some(s)) {
                        issue(format!("{s:?} is not one of the enum values"));
                    }
                }
            }
            "integer" => {
                let ok = match format {
                    Some("uint32") => value.as_u64().is_some_and(|n| n <= u32::MAX as u64),
                    Some("int32") | None => {
                        value.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
                    }
                    _ => value.as_i64().is_some() || value.as_u64().is_some(),
                };
                if !ok {
                    issue(format!(
                        "expected a {} integer, got {}",
                        format.unwrap_or("int32"),
                        kind(value)
                    ));
                }
            }
            "number" => {
                let ok = value.is_number()
                    || matches!(value.as_str(), Some("NaN" | "Infinity" | "-Infinity"));
                if !ok {
                    issue(format!("expected a number, got {}", kind(value)));
                }
            }
            "boolean" => {
                if !value.is_boolean() {
                    issue(format!("expected a boolean, got {}", kind(value)));
                }
            }
            other => issue(format!("schema type {other} is not known to the validator")),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_duration(s: &str) -> bool {
    let Some(n) = s.strip_suffix('s') else {
        return false;
    };
    let n = n.strip_prefix('-').unwrap_or(n);
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 9
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn is_base64(s: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        || base64::engine::general_purpose::URL_SAFE.decode(s).is_ok()
}

/// The three documents rearguard talks to: Cloud Run v2, Monitoring v3, Logging v2.
pub struct DiscoverySet {
    pub run: Discovery,
    pub monitoring: Discovery,
    pub logging: Discovery,
}

impl DiscoverySet {
    /// Loads `run-v2.json`, `monitoring-v3.json` and `logging-v2.json` from `dir`
    /// (in this repository's CI: `../shared/gcp-discovery` relative to the repository root).
    pub fn load(dir: &Path) -> Result<Self, DiscoveryError> {
        Ok(Self {
            run: Discovery::load(&dir.join("run-v2.json"))?,
            monitoring: Discovery::load(&dir.join("monitoring-v3.json"))?,
            logging: Discovery::load(&dir.join("logging-v2.json"))?,
        })
    }

    /// The document a method id belongs to (`run.`, `monitoring.`, `logging.`).
    pub fn for_method(&self, method: &str) -> Result<&Discovery, DiscoveryError> {
        match method.split('.').next() {
            Some("run") => Ok(&self.run),
            Some("monitoring") => Ok(&self.monitoring),
            Some("logging") => Ok(&self.logging),
            _ => Err(DiscoveryError::NoMethod(method.into())),
        }
    }

    pub fn validate_request(
        &self,
        method: &str,
        body: &Value,
    ) -> Result<Vec<Issue>, DiscoveryError> {
        self.for_method(method)?.validate_request(method, body)
    }

    pub fn validate_response(
        &self,
        method: &str,
        body: &Value,
    ) -> Result<Vec<Issue>, DiscoveryError> {
        self.for_method(method)?.validate_response(method, body)
    }

    pub fn validate_params(
        &self,
        method: &str,
        params: &[(String, String)],
    ) -> Result<Vec<Issue>, DiscoveryError> {
        self.for_method(method)?.validate_params(method, params)
    }
}

/// `../shared/gcp-discovery` next to the repository's checkout (where CI keeps
/// Google's documents for tests); this crate sits two levels below the root.
pub fn default_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/gcp-discovery")
}

/// Loads a [`DiscoverySet`] once per directory per process.
pub fn load_cached(dir: &Path) -> Result<std::sync::Arc<DiscoverySet>, DiscoveryError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<std::path::PathBuf, Arc<DiscoverySet>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(d) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(dir) {
        return Ok(d.clone());
    }
    let set = Arc::new(DiscoverySet::load(dir)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dir.to_path_buf(), set.clone());
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert!(is_duration("60s"));
        assert!(is_duration("1.5s"));
        assert!(!is_duration("60"));
        assert!(!is_duration("1m"));
    }
}
