//! Prometheus's HTTP query API over rearguard's own tsdb, and the rules and
//! alerts endpoints: `GET|POST /api/v1/query`, `/api/v1/query_range`,
//! `GET /api/v1/rules`, `GET /api/v1/alerts`, in Prometheus's response format.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

use crate::clock::{to_datetime, Clock, TimestampMs};
use crate::config::duration::parse_duration;
use crate::labels::Labels;
use crate::promql::{Engine, QueryError};
use crate::rules::alerting::{ActiveAlert, AlertState};
use crate::rules::group::RuleState;
use crate::rules::RuleManager;
use crate::tsdb::Queryable;

/// What the rules API needs.
#[derive(Clone)]
pub struct RulesApiState {
    pub manager: Arc<RuleManager>,
    /// When set, `/api/v1/alerts` also says who hears each alert and what
    /// silences, inhibits or mutes it.
    pub dispatcher: Option<Arc<crate::dispatch::Dispatcher>>,
    pub db: Arc<dyn Queryable>,
    pub engine: Engine,
    pub clock: Clock,
    /// One permit per API query evaluated at once (`query.max_concurrency`),
    /// so queries cannot take every blocking thread; rule groups and probes
    /// never wait for these.
    pub query_slots: Arc<tokio::sync::Semaphore>,
}

/// The routes, with their state applied: merge into the main router.
pub fn router<S: Clone + Send + Sync + 'static>(state: RulesApiState) -> Router<S> {
    Router::new()
        .route("/api/v1/query", get(query_get).post(query_post))
        .route("/api/v1/query_range", get(range_get).post(range_post))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .with_state(state)
}

/// Prometheus's error body.
fn api_error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"status": "error", "errorType": kind, "error": msg.into()})),
    )
        .into_response()
}

fn bad_data(msg: impl Into<String>) -> Response {
    api_error(StatusCode::BAD_REQUEST, "bad_data", msg)
}

/// Prometheus time parameters: Unix seconds (with a fraction) or RFC 3339.
pub fn parse_time(s: &str) -> Result<TimestampMs, String> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            return Ok((f * 1000.0).round() as i64);
        }
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// Step and timeout parameters: seconds (float) or a Prometheus duration.
pub fn parse_step(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            return Ok((f * 1000.0).round() as i64);
        }
    }
    parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

#[derive(Deserialize, Default)]
struct QueryParams {
    query: Option<String>,
    time: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
struct RangeParams {
    query: Option<String>,
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
    timeout: Option<String>,
}

fn engine_error(e: QueryError) -> Response {
    match e {
        QueryError::Parse(m) => bad_data(format!("invalid parameter \"query\": {m}")),
        // Prometheus answers a timed-out query with 503 and errorType "timeout".
        e @ QueryError::Timeout(_) => {
            api_error(StatusCode::SERVICE_UNAVAILABLE, "timeout", e.to_string())
        }
        other => api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "execution",
            other.to_string(),
        ),
    }
}

async fn query_get(State(s): State<RulesApiState>, Query(p): Query<QueryParams>) -> Response {
    instant(s, p).await
}

/// Reads an `application/x-www-form-urlencoded` body (Prometheus clients POST long queries).
fn form(body: &[u8]) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn query_post(State(s): State<RulesApiState>, body: Bytes) -> Response {
    let mut f = form(&body);
    let p = QueryParams {
        query: f.remove("query"),
        time: f.remove("time"),
        timeout: f.remove("timeout"),
    };
    instant(s, p).await
}

async fn instant(s: RulesApiState, p: QueryParams) -> Response {
    let Some(q) = p.query.filter(|q| !q.trim().is_empty()) else {
        return bad_data("invalid parameter \"query\": unknown position: parse error: no expression found in input");
    };
    let t = match p.time.as_deref() {
        None | Some("") => s.clock.now_ms(),
        Some(t) => match parse_time(t) {
            Ok(t) => t,
            Err(e) => return bad_data(format!("invalid parameter \"time\": {e}")),
        },
    };
    let engine = match engine_with_timeout(&s.engine, p.timeout.as_deref()) {
        Ok(e) => e,
        Err(e) => return bad_data(e),
    };
    let db = s.db.clone();
    evaluate(&s.query_slots, engine, move |engine| {
        engine.instant_query(db.as_ref(), &q, t)
    })
    .await
}

/// The engine for one request: the `timeout` parameter may shorten the
/// configured timeout, never lengthen it (as in Prometheus).
fn engine_with_timeout(engine: &Engine, timeout: Option<&str>) -> Result<Engine, String> {
    let mut engine = engine.clone();
    if let Some(t) = timeout.filter(|t| !t.is_empty()) {
        let ms = parse_step(t).map_err(|e| format!("invalid parameter \"timeout\": {e}"))?;
        let asked = std::time::Duration::from_millis(ms.max(0) as u64);
        engine.options.timeout = Some(engine.options.timeout.map_or(asked, |c| c.min(asked)));
    }
    Ok(engine)
}

/// Runs one API query off the runtime, within a concurrency slot and the
/// engine's timeout (waiting for a slot counts against it).
async fn evaluate(
    slots: &Arc<tokio::sync::Semaphore>,
    engine: Engine,
    query: impl FnOnce(&Engine) -> Result<crate::promql::QueryResult, QueryError> + Send + 'static,
) -> Response {
    let wait = engine.options.timeout.unwrap_or(std::time::Duration::MAX);
    let permit = match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => {
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "shutting down",
            )
        }
        Err(_) => return engine_error(QueryError::Timeout("query queue")),
    };
    // The answer is serialized off the runtime too: 11,000 points × many
    // series is CPU work a runtime worker (probes, rule groups) must not do.
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        query(&engine).map(|r| serde_json::to_vec(&r.to_api_response()))
    })
    .await;
    match result {
        Ok(Ok(Ok(body))) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(Ok(Err(e))) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Ok(Err(e)) => engine_error(e),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn range_get(State(s): State<RulesApiState>, Query(p): Query<RangeParams>) -> Response {
    range(s, p).await
}

async fn range_post(State(s): State<RulesApiState>, body: Bytes) -> Response {
    let mut f = form(&body);
    let p = RangeParams {
        query: f.remove("query"),
        start: f.remove("start"),
        end: f.remove("end"),
        step: f.remove("step"),
        timeout: f.remove("timeout"),
    };
    range(s, p).await
}

async fn range(s: RulesApiState, p: RangeParams) -> Response {
    let Some(q) = p.query.filter(|q| !q.trim().is_empty()) else {
        return bad_data("invalid parameter \"query\": unknown position: parse error: no expression found in input");
    };
    let param = |name: &str,
                 v: Option<String>,
                 f: fn(&str) -> Result<i64, String>|
     -> Result<i64, String> {
        let v = v.ok_or_else(|| format!("invalid parameter \"{name}\": missing"))?;
        f(&v).map_err(|e| format!("invalid parameter \"{name}\": {e}"))
    };
    let (start, end, step) = match (
        param("start", p.start, parse_time),
        param("end", p.end, parse_time),
        param("step", p.step, parse_step),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad_data(e),
    };
    if end < start {
        return bad_data("invalid parameter \"end\": end timestamp must not be before start time");
    }
    if step <= 0 {
        return bad_data("invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer");
    }
    if (end - start) / step > 11_000 {
        return bad_data("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
    }
    let engine = match engine_with_timeout(&s.engine, p.timeout.as_deref()) {
        Ok(e) => e,
        Err(e) => return bad_data(e),
    };
    let db = s.db.clone();
    evaluate(&s.query_slots, engine, move |engine| {
        engine.range_query(db.as_ref(), &q, start, end, step)
    })
    .await
}

fn rfc3339(ms: TimestampMs) -> String {
    to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn labels_json(l: &Labels) -> JsonValue {
    json!(l.to_map())
}

/// Prometheus renders alert values with `%e` shortest (`1e+00`).
fn value_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

fn alert_json(a: &ActiveAlert) -> JsonValue {
    let mut o = json!({
        "labels": labels_json(&a.labels),
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339(a.active_at_ms),
        "value": value_string(a.value),
    });
    if let Some(k) = a.keep_firing_since_ms {
        o["keepFiringSince"] = json!(rfc3339(k));
    }
    o
}

#[derive(Deserialize, Default)]
struct RulesParams {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn rules(State(s): State<RulesApiState>, Query(p): Query<RulesParams>) -> Response {
    let (want_alert, want_record) = match p.kind.as_deref() {
        None | Some("") => (true, true),
        Some("alert") => (true, false),
        Some("record") => (false, true),
        Some(other) => {
            return bad_data(format!(
                "invalid parameter \"type\": unsupported value {other:?}; use alert or record"
            ))
        }
    };
    let mut groups = Vec::new();
    for g in s.manager.groups() {
        let mut rules = Vec::new();
        for r in &g.rules {
            let last = r
                .status
                .last_eval_ms
                .map(rfc3339)
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
            let common = |mut o: JsonValue| {
                o["health"] = json!(r.status.health.as_str());
                o["lastError"] = json!(r.status.last_error.clone().unwrap_or_default());
                o["evaluationTime"] = json!(r.status.eval_duration.as_secs_f64());
                o["lastEvaluation"] = json!(last);
                o
            };
            match &r.state {
                RuleState::Recording { record } if want_record => rules.push(common(json!({
                    "name": record,
                    "query": r.def.expr,
                    "labels": r.labels,
                    "type": "recording",
                }))),
                RuleState::Alerting(a) if want_alert => {
                    let active: Vec<&ActiveAlert> = a.firing_and_pending().collect();
                    let state = active
                        .iter()
                        .map(|x| x.state)
                        .max()
                        .unwrap_or(AlertState::Inactive);
                    rules.push(common(json!({
                        "state": state.as_str(),
                        "name": a.def.name,
                        "query": a.def.expr,
                        "duration": a.def.for_.as_secs_f64(),
                        "keepFiringFor": a.def.keep_firing_for.as_secs_f64(),
                        "labels": a.def.labels,
                        "annotations": a.def.annotations,
                        "alerts": active.iter().map(|x| alert_json(x)).collect::<Vec<_>>(),
                        "type": "alerting",
                    })));
                }
                _ => {}
            }
        }
        if rules.is_empty() && p.kind.is_some() {
            continue;
        }
        groups.push(json!({
            "name": g.def.name,
            "file": g.def.file.display().to_string(),
            "rules": rules,
            "interval": g.interval.as_secs_f64(),
            "limit": g.def.limit,
            "evaluationTime": g.eval_duration.as_secs_f64(),
            "lastEvaluation": g.last_eval_ms.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        }));
    }
    Json(json!({"status": "success", "data": {"groups": groups}})).into_response()
}

#[derive(serde::Deserialize)]
struct AlertsParams {
    /// Only the alert with this fingerprint (16 hex digits; notification links use it).
    fingerprint: Option<String>,
}

async fn alerts(
    State(s): State<RulesApiState>,
    axum::extract::Query(params): axum::extract::Query<AlertsParams>,
) -> Response {
    let mut out = Vec::new();
    for g in s.manager.groups() {
        for r in &g.rules {
            if let RuleState::Alerting(a) = &r.state {
                for al in a.firing_and_pending() {
                    let fingerprint = al.labels.fingerprint_hex();
                    if params
                        .fingerprint
                        .as_ref()
                        .is_some_and(|f| *f != fingerprint)
                    {
                        continue;
                    }
                    let mut alert = alert_json(al);
                    if let (Some(d), Some(obj)) = (&s.dispatcher, alert.as_object_mut()) {
                        obj.insert("fingerprint".into(), json!(fingerprint));
                        if let Ok(serde_json::Value::Object(status)) =
                            serde_json::to_value(d.alert_status(&al.labels))
                        {
                            obj.extend(status.into_iter().filter(|(k, _)| k != "state"));
                        }
                    }
                    out.push(alert);
                }
            }
        }
    }
    Json(json!({"status": "success", "data": {"alerts": out}})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        assert_eq!(parse_time("1.5").unwrap(), 1500);
        assert_eq!(
            parse_time("2024-01-01T00:00:00Z").unwrap(),
            1_704_067_200_000
        );
        assert!(parse_time("soon").is_err());
        assert_eq!(parse_step("15").unwrap(), 15_000);
        assert_eq!(parse_step("1m").unwrap(), 60_000);
        assert_eq!(value_string(1.0), "1e+00");
        assert_eq!(value_string(0.125), "1.25e-01");
    }
}
