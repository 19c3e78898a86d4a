//! The `command` effect: an argv run with a timeout and the alert in its
//! environment; stdout and stderr are captured (bounded) into the audit.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::alert::Alert;

/// How much of each output stream goes into the audit.
const MAX_CAPTURE: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CommandOutcome {
    pub success: bool,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// Set when the program could not be started.
    pub error: Option<String>,
}

/// The environment a command sees about the alert that triggered it.
pub fn alert_env(alert: Option<&Alert>, service: Option<&str>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(a) = alert {
        env.push(("REARGUARD_ALERTNAME".into(), a.name().to_string()));
        env.push(("REARGUARD_VALUE".into(), a.value.to_string()));
        env.push((
            "REARGUARD_LABELS_JSON".into(),
            serde_json::to_string(&a.labels.to_map()).unwrap_or_default(),
        ));
    }
    let svc = service
        .map(str::to_string)
        .or_else(|| alert.and_then(|a| a.labels.get("service").map(str::to_string)))
        .unwrap_or_default();
    env.push(("REARGUARD_SERVICE".into(), svc));
    env
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> String {
    let Some(mut r) = r else { return String::new() };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if buf.len() < MAX_CAPTURE {
                    let take = n.min(MAX_CAPTURE - buf.len());
                    buf.extend_from_slice(&chunk[..take]);
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `argv` with `env` added, killing it after `timeout`.
pub async fn run(argv: &[String], env: &[(String, String)], timeout: Duration) -> CommandOutcome {
    let failed = |error: String| CommandOutcome {
        success: false,
        exit_code: None,
        timed_out: false,
        stdout: String::new(),
        stderr: String::new(),
        error: Some(error),
    };
    let Some((program, args)) = argv.split_first() else {
        return failed("empty command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start {program:?}: {e}")),
    };
    let stdout = tokio::spawn(read_bounded(child.stdout.take()));
    let stderr = tokio::spawn(read_bounded(child.stderr.take()));
    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (Some(status), false),
        Ok(Err(e)) => return failed(format!("waiting for {program:?}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            (None, true)
        }
    };
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    CommandOutcome {
        success: status.is_some_and(|s| s.success()),
        exit_code: status.and_then(|s| s.code()),
        timed_out,
        stdout,
        stderr,
        error: timed_out.then(|| {
            format!(
                "timed out after {}",
                crate::config::duration::format_duration(timeout)
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[tokio::test]
    async fn captures_output_env_and_exit_code() {
        let env = vec![("REARGUARD_ALERTNAME".to_string(), "HighErrors".to_string())];
        let out = run(
            &argv(&[
                "sh",
                "-c",
                "echo $REARGUARD_ALERTNAME; echo oops >&2; exit 3",
            ]),
            &env,
            Duration::from_secs(10),
        )
        .await;
        assert!(!out.success);
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stdout.trim(), "HighErrors");
        assert_eq!(out.stderr.trim(), "oops");
        let ok = run(&argv(&["true"]), &[], Duration::from_secs(10)).await;
        assert!(ok.success);
    }

    #[tokio::test]
    async fn times_out_and_reports_missing_programs() {
        let out = run(&argv(&["sleep", "10"]), &[], Duration::from_millis(100)).await;
        assert!(out.timed_out && !out.success, "{out:?}");
        let missing = run(&argv(&["/nonexistent/prog"]), &[], Duration::from_secs(1)).await;
        assert!(missing.error.unwrap().contains("cannot start"));
    }
}
