//! `rearguard check` against broken configs: every error names file:line:col.

use std::path::Path;
use std::process::Command;

fn check(dir: &Path, text: &str) -> (i32, String) {
    let path = dir.join("rearguard.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rearguard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn assert_error_at(dir: &Path, text: &str, line: usize, col: usize, needle: &str) {
    let (code, out) = check(dir, text);
    assert_eq!(code, 1, "exit code for:\n{text}\n{out}");
    let prefix = format!("{}:{line}:{col}: ", dir.join("rearguard.yaml").display());
    assert!(
        out.lines()
            .any(|l| l.starts_with(&prefix) && l.contains(needle)),
        "expected {prefix}…{needle} in:\n{out}"
    );
}

#[test]
fn good_config_prints_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(
        dir.path(),
        "probes:\n  - name: a\n    url: http://127.0.0.1:1/health\n",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": ok (1 probes"), "{out}");
}

#[test]
fn unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    assert_error_at(
        dir.path(),
        "probes:\n  - name: a\n    url: http://x/\n    tiemout: 5s\n",
        4,
        5,
        "unknown field `tiemout`",
    );
}

#[test]
fn bad_duration() {
    let dir = tempfile::tempdir().unwrap();
    assert_error_at(
        dir.path(),
        "probes:\n  - name: a\n    url: http://x/\n    interval: 10 sec\n",
        4,
        15,
        "not a valid duration",
    );
}

#[test]
fn bad_url() {
    let dir = tempfile::tempdir().unwrap();
    assert_error_at(
        dir.path(),
        "probes:\n  - name: a\n    url: not a url\n",
        3,
        10,
        "invalid url",
    );
}

#[test]
fn missing_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_error_at(
        dir.path(),
        "admin:\n  token_file: missing-token\n",
        2,
        15,
        "cannot read secret file",
    );
}

#[test]
fn duplicate_probe_name_and_other_errors_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let text = "probes:\n  - name: a\n    url: http://x/\n  - name: a\n    url: gopher://y/\n";
    assert_error_at(dir.path(), text, 4, 11, "duplicate probe name \"a\"");
    assert_error_at(dir.path(), text, 5, 10, "is not http or https");
}

#[test]
fn unparsable_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(dir.path(), "probes:\n  - name: a\n   url: [unclosed\n");
    assert_eq!(code, 1, "{out}");
    let prefix = format!("{}:", dir.path().join("rearguard.yaml").display());
    let line = out.lines().find(|l| l.starts_with(&prefix)).expect(&out);
    let pos: Vec<&str> = line[prefix.len()..].splitn(3, ':').collect();
    assert!(pos[0].parse::<usize>().unwrap() >= 2, "{line}");
    assert!(pos[1].parse::<usize>().is_ok(), "{line}");
}

#[test]
fn missing_config_file_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_rearguard"))
        .args(["check", "--config", "/nonexistent/rearguard.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot read config file"));
}

#[test]
fn bad_google_credentials_are_located_and_offline_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    // A service-account key file without its private key.
    std::fs::write(
        dir.path().join("key.json"),
        r#"{"type": "service_account", "client_email": "rg@p.iam.gserviceaccount.com"}"#,
    )
    .unwrap();
    let text = "gcp:\n  project: p\n  credentials: key.json\n";
    assert_error_at(
        dir.path(),
        text,
        3,
        16,
        "gcp.credentials: Google credentials",
    );
    // --offline (CI, a laptop without the key) checks everything else.
    let out = Command::new(env!("CARGO_BIN_EXE_rearguard"))
        .args(["check", "--offline", "--config"])
        .arg(dir.path().join("rearguard.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_rule_too_deep_to_evaluate_is_located_and_check_survives_it() {
    let dir = tempfile::tempdir().unwrap();
    // 50,000 terms once overflowed `check`'s own stack.
    let expr = vec!["1"; 50_000].join("+");
    std::fs::write(
        dir.path().join("deep.yaml"),
        format!("groups:\n- name: g\n  rules:\n  - record: deep\n    expr: {expr}\n"),
    )
    .unwrap();
    let (code, out) = check(dir.path(), "rule_files: [deep.yaml]\n");
    assert_eq!(code, 1, "{out}");
    let prefix = format!("{}:5:11: ", dir.path().join("deep.yaml").display());
    assert!(
        out.lines()
            .any(|l| l.starts_with(&prefix) && l.contains("nests too deeply")),
        "expected {prefix}… in:\n{out}"
    );
}

#[test]
fn query_limits_must_be_positive() {
    let dir = tempfile::tempdir().unwrap();
    assert_error_at(
        dir.path(),
        "query:\n  timeout: 30s\n  max_concurrency: 0\n",
        3,
        20,
        "query.max_concurrency must be greater than 0",
    );
}

/// Nine levels of nine aliases: a billion strings if expanded.
fn alias_bomb() -> String {
    let mut bomb = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 9].join(", ");
        bomb.push_str(&format!("{}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    bomb
}

#[test]
fn deep_yaml_and_alias_bombs_are_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("probes: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let (code, out) = check(dir.path(), &deep);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rearguard.yaml:"), "{out}");

    let (code, out) = check(dir.path(), &alias_bomb());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rearguard.yaml:"), "{out}");

    for (name, text) in [
        (
            "deep.yaml",
            format!("groups: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        ),
        ("bomb.yaml", format!("{}groups: []\n", alias_bomb())),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
        let (code, out) = check(dir.path(), &format!("rule_files: [{name}]\n"));
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(name), "{name}: {out}");
    }
}
