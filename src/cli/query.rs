//! `rearguard query EXPR [--time T] [--url URL]`: an instant query against a
//! running rearguard's `/api/v1/query` (or any Prometheus-compatible API).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value as Json;

/// Accepts RFC 3339 or Unix seconds (with a fraction); returns the API's `time` parameter.
pub fn parse_time(t: &str) -> anyhow::Result<String> {
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() {
            return Ok(t.to_string());
        }
    }
    let dt = chrono::DateTime::parse_from_rfc3339(t).with_context(|| {
        format!("invalid --time {t:?}: use RFC 3339 (2026-01-02T15:04:05Z) or Unix seconds")
    })?;
    Ok(format!("{:.3}", dt.timestamp_millis() as f64 / 1000.0))
}

fn labels(m: &Json) -> String {
    let Some(obj) = m.as_object() else {
        return "{}".into();
    };
    let name = obj.get("__name__").and_then(Json::as_str).unwrap_or("");
    let rest: Vec<String> = obj
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
        .collect();
    if rest.is_empty() && !name.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", rest.join(", "))
    }
}

fn point(p: &Json) -> String {
    match p.as_array().map(Vec::as_slice) {
        Some([t, v]) => format!("{} @{}", v.as_str().unwrap_or("?"), t),
        _ => p.to_string(),
    }
}

/// Renders a Prometheus API `data` object as text lines.
pub fn render(data: &Json) -> Vec<String> {
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("vector") => result
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| format!("{} => {}", labels(&s["metric"]), point(&s["value"])))
                    .collect()
            })
            .unwrap_or_default(),
        Some("matrix") => result
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let pts: Vec<String> = s["values"]
                            .as_array()
                            .map(|v| v.iter().map(point).collect())
                            .unwrap_or_default();
                        format!("{} =>\n  {}", labels(&s["metric"]), pts.join("\n  "))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Some("scalar") | Some("string") => vec![point(result)],
        _ => vec![data.to_string()],
    }
}

pub async fn run(
    expr: &str,
    time: Option<&str>,
    url: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut params = vec![("query", expr.to_string())];
    if let Some(t) = time {
        params.push(("time", parse_time(t)?));
    }
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let resp = client
        .get(&endpoint)
        .query(&params)
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint} (is rearguard running? pass --url)"))?;
    let status = resp.status();
    let body: Json = resp.json().await.with_context(|| {
        format!("{endpoint} answered HTTP {status} without a Prometheus API body")
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if body["status"] != "success" {
        eprintln!(
            "error: {}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("unknown error")
        );
        return Ok(ExitCode::FAILURE);
    }
    if let Some(w) = body["warnings"].as_array() {
        for w in w {
            eprintln!("warning: {}", w.as_str().unwrap_or_default());
        }
    }
    if !json {
        for line in render(&body["data"]) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_vectors_and_times() {
        let data: Json = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[12.5,"1"]},{"metric":{},"value":[12.5,"2"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            render(&data),
            vec![
                r#"up{job="a"} => 1 @12.5"#.to_string(),
                "{} => 2 @12.5".to_string()
            ]
        );
        assert_eq!(parse_time("1700000000.5").unwrap(), "1700000000.5");
        assert_eq!(
            parse_time("2024-01-01T00:00:00Z").unwrap(),
            "1704067200.000"
        );
        assert!(parse_time("yesterday").is_err());
    }
}
