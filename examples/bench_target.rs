//! Many HTTP targets from one process, for `bench/probes.sh`.
//!
//! Usage: `bench_target COUNT PORTS_FILE`: binds COUNT listeners on
//! 127.0.0.1 (ephemeral ports), writes their ports to PORTS_FILE (one a line,
//! written once all are bound), and answers `GET /health` on each with a small
//! JSON body until killed.

use axum::routing::get;
use axum::Router;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_target COUNT PORTS_FILE";
    let count: usize = args.next().ok_or(usage)?.parse().map_err(|_| usage)?;
    let ports_file = args.next().ok_or(usage)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new().route("/health", get(|| async { r#"{"status":"healthy"}"# }));
        let mut ports = String::new();
        for _ in 0..count {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            ports.push_str(&format!("{}\n", listener.local_addr()?.port()));
            let app = app.clone();
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let tmp = format!("{ports_file}.tmp");
        std::fs::write(&tmp, ports)?;
        std::fs::rename(&tmp, &ports_file)?;
        std::future::pending::<()>().await;
        Ok(())
    })
}
