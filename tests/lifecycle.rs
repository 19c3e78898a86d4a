//! The daemon as a process: readiness, SIGHUP reload (good and bad), SIGTERM.

mod http_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(port: u16, state: &Path, interval: &str) -> String {
    format!(
        "listen: 127.0.0.1:{port}\nstate_dir: {}\nprobes:\n  - name: self\n    url: http://127.0.0.1:{port}/healthz\n    interval: {interval}\n    timeout: 1s\n",
        state.display()
    )
}

fn start(config: &Path, port: u16) -> Daemon {
    start_logging(&["--log-format", "json"], config, port)
}

/// `rearguard <log_args> run --config <config>`, its stderr lines collected.
fn start_logging(log_args: &[&str], config: &Path, port: u16) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rearguard"))
        .args(log_args)
        .args(["run", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Daemon { child, lines, port }
}

impl Daemon {
    fn get(&self, path: &str) -> Option<(u16, String)> {
        self.request(&format!("GET {path} HTTP/1.1\r\n"), b"")
    }

    /// Sends a request line and body over a fresh connection; returns the
    /// status and body. The server may answer before reading a large body,
    /// so a failed write is not an error here.
    fn request(&self, head: &str, body: &[u8]) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "{head}Host: x\r\nConnection: close\r\n\r\n").ok()?;
        let _ = s.write_all(body);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let buf = String::from_utf8_lossy(&buf);
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line containing {needle:?} within {timeout:?}");
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some((200, _)) = self.get("/healthz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not come up");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

#[test]
fn serves_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let cfg = dir.path().join("rearguard.yaml");
    std::fs::write(&cfg, config_text(port, &dir.path().join("state"), "1s")).unwrap();
    let d = start(&cfg, port);
    // The config probes rearguard's own /healthz: the listener is bound before
    // the first probe, so it never logs a false "down" at start.
    let first = d.wait_for_line("\"probe is ", Duration::from_secs(20));
    assert!(first.contains("probe is up"), "{first}");
    d.wait_healthy();
    let (code, body) = d.get("/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("rearguard_build_info{"), "{body}");
    assert!(body.contains("process_resident_memory_bytes"), "{body}");
    assert!(dir.path().join("state/state.db").exists());
    let (code, _) = d.get("/nonexistent").unwrap();
    assert_eq!(code, 404);
}

#[test]
fn sighup_applies_good_config_and_rejects_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let cfg = dir.path().join("rearguard.yaml");
    let state = dir.path().join("state");
    std::fs::write(&cfg, config_text(port, &state, "1s")).unwrap();
    let d = start(&cfg, port);
    d.wait_healthy();
    d.wait_for_line("rearguard started", Duration::from_secs(10));

    // A bad config: rejected, with its error located, and the daemon keeps serving.
    std::fs::write(
        &cfg,
        format!("{}bogus_key: 1\n", config_text(port, &state, "1s")),
    )
    .unwrap();
    d.signal("-HUP");
    let line = d.wait_for_line("config reload rejected", Duration::from_secs(10));
    assert!(
        line.contains("rearguard.yaml:8:1: unknown field `bogus_key`"),
        "{line}"
    );
    assert_eq!(d.get("/healthz").map(|r| r.0), Some(200));

    // A good config: applied.
    std::fs::write(&cfg, config_text(port, &state, "2s")).unwrap();
    d.signal("-HUP");
    d.wait_for_line("config reloaded", Duration::from_secs(10));
    assert_eq!(d.get("/healthz").map(|r| r.0), Some(200));
}

#[test]
fn sigterm_exits_zero_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let cfg = dir.path().join("rearguard.yaml");
    std::fs::write(&cfg, config_text(port, &dir.path().join("state"), "1s")).unwrap();
    let mut d = start(&cfg, port);
    d.wait_healthy();
    // Keep a connection open: shutdown must not wait for it forever.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    d.signal("-TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    // journald and log files get stderr through a pipe: escape codes there are noise.
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let closed = http_support::free_port();
    let cfg = dir.path().join("rearguard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {}\nprobes:\n  - name: down\n    url: http://127.0.0.1:{closed}/health\n    interval: 1s\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let daemon = start_logging(&[], &cfg, port);
    // Every line up to the probe's first failure (text format, through a pipe).
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = daemon.lines.recv_timeout(left) else {
            break;
        };
        let done = line.contains("probe is down");
        seen.push(line);
        if done {
            break;
        }
    }
    drop(daemon);
    let text = seen.join("\n");
    assert!(text.contains("probe is down"), "{text}");
    assert!(text.contains("WARN"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in piped logs: {text:?}"
    );
}

#[test]
fn bad_config_at_start_exits_nonzero_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rearguard.yaml");
    std::fs::write(&cfg, "listen: nowhere\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rearguard"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rearguard.yaml:1:9"), "{err}");
}

#[test]
fn talks_to_systemd_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let cfg = dir.path().join("rearguard.yaml");
    std::fs::write(&cfg, config_text(port, &dir.path().join("state"), "1s")).unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the shell's.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_rearguard"))
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
    let _guard = KillOnDrop(child.id());
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notify message");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let mut seen = Vec::new();
    // READY=1 first, then watchdog pings at half of WATCHDOG_USEC.
    while seen
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        seen.push(recv());
        assert!(seen.len() < 50, "{seen:?}");
    }
    assert!(seen[0].contains("READY=1"), "{seen:?}");
    let kill = |sig: &str| {
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
    };
    kill("-HUP");
    let mut after_hup = Vec::new();
    while !after_hup.iter().any(|m: &String| m.contains("READY=1")) {
        after_hup.push(recv());
        assert!(after_hup.len() < 50, "{after_hup:?}");
    }
    let reloading = after_hup.iter().position(|m| m.contains("RELOADING=1"));
    assert!(reloading.is_some(), "{after_hup:?}");
    assert!(
        after_hup[reloading.unwrap()].contains("MONOTONIC_USEC="),
        "{after_hup:?}"
    );
    kill("-TERM");
    let mut stopping = false;
    for _ in 0..50 {
        if recv().contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

impl Daemon {
    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Option<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
        self.request(&head, body).map(|r| r.0)
    }
}

#[test]
fn hostile_requests_and_a_hostile_reload_leave_the_daemon_probing() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let cfg = dir.path().join("rearguard.yaml");
    let state = dir.path().join("state");
    std::fs::write(&cfg, config_text(port, &state, "1s")).unwrap();
    let d = start(&cfg, port);
    d.wait_healthy();
    d.wait_for_line("rearguard started", Duration::from_secs(10));

    // Deep and long expressions once aborted the process.
    let deep = format!(
        "/api/v1/query?query={}1{}",
        "(".repeat(5_000),
        ")".repeat(5_000)
    );
    let deep = deep.replace('(', "%28").replace(')', "%29");
    assert_eq!(d.get(&deep).map(|r| r.0), Some(400));
    let sum = vec!["1"; 5_000].join("%2B");
    assert_eq!(
        d.get(&format!("/api/v1/query?query={sum}")).map(|r| r.0),
        Some(400)
    );

    // Every POST route refuses a body over the limit.
    let big = vec![b'a'; 3 * 1024 * 1024];
    for (path, ty) in [
        ("/api/v1/query", "application/x-www-form-urlencoded"),
        ("/api/v1/query_range", "application/x-www-form-urlencoded"),
        ("/api/v1/silences", "application/json"),
        ("/api/v1/holds", "application/json"),
        ("/api/v1/rollbacks", "application/json"),
        ("/api/v2/alerts", "application/json"),
        ("/api/v2/silences", "application/json"),
    ] {
        let status = d.post(path, ty, &big);
        assert!(
            matches!(status, Some(413) | Some(401) | Some(403)),
            "{path}: {status:?}"
        );
        if path.contains("query") {
            assert_eq!(status, Some(413), "{path}");
        }
    }

    // A rule too deep to evaluate: the reload is rejected, the old config kept.
    let expr = vec!["up"; 1_000].join(" + ");
    std::fs::write(
        dir.path().join("deep.yaml"),
        format!("groups:\n- name: g\n  rules:\n  - record: deep\n    expr: {expr}\n"),
    )
    .unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{}rule_files: [deep.yaml]\n",
            config_text(port, &state, "1s")
        ),
    )
    .unwrap();
    d.signal("-HUP");
    let line = d.wait_for_line("config reload rejected", Duration::from_secs(10));
    assert!(
        line.contains("deep.yaml:5:11") && line.contains("nests too deeply"),
        "{line}"
    );

    // Still serving and still probing.
    assert_eq!(d.get("/healthz").map(|r| r.0), Some(200));
    let (_, metrics) = d.get("/metrics").unwrap();
    let probes_before = probe_runs(&metrics);
    std::thread::sleep(Duration::from_millis(2_500));
    let (_, metrics) = d.get("/metrics").unwrap();
    assert!(probe_runs(&metrics) > probes_before, "probes kept running");
}

/// The number of probe runs reported on /metrics.
fn probe_runs(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("rearguard_probe_runs_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
