//! `rearguard backtest --config FILE --from T1 --to T2 [--step D] [--format text|json]`:
//! what rearguard would have done over a past window, read from Google and
//! replayed through the real rules and decisions. Changes nothing anywhere:
//! no state store is opened, no notification sent, no service patched.
//!
//! Exit status: 0 the report is complete; 2 a flag is wrong (the message
//! names it); 1 the config or Google failed (no report is printed as if it
//! were complete).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::backtest::history::{self, ReadProgress};
use crate::backtest::{replay, report, ReplayOptions};
use crate::clock::{to_datetime, TimestampMs};
use crate::config::duration::parse_duration;
use crate::config::LoadedConfig;
use crate::gcp::monitoring::rfc3339;
use crate::gcp::GcpContext;
use crate::rules::manager::RulesConfig;

/// Cloud Monitoring keeps Google Cloud metrics six weeks
/// (https://cloud.google.com/monitoring/quotas#data_retention_policy).
pub const MONITORING_RETENTION_MS: i64 = 6 * 7 * 24 * 3_600_000;
/// Cloud Logging's `_Default` bucket keeps entries 30 days
/// (https://cloud.google.com/logging/quotas#logs_retention_periods).
pub const LOGGING_RETENTION_MS: i64 = 30 * 24 * 3_600_000;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The command's flags, as given.
#[derive(Clone, Debug)]
pub struct BacktestArgs {
    pub from: String,
    pub to: String,
    pub step: Option<String>,
    pub format: Format,
}

/// A flag that cannot be used: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct FlagError {
    pub flag: &'static str,
    pub message: String,
}

fn flag_err(flag: &'static str, message: impl Into<String>) -> FlagError {
    FlagError {
        flag,
        message: message.into(),
    }
}

/// Whether a time in milliseconds is a calendar date (chrono's range).
fn representable(ms: TimestampMs) -> bool {
    chrono::DateTime::from_timestamp_millis(ms).is_some()
}

/// A time: RFC 3339, Unix seconds, `now`, or `now-DURATION` (`now-14d`).
pub fn parse_time(
    flag: &'static str,
    t: &str,
    now_ms: TimestampMs,
) -> Result<TimestampMs, FlagError> {
    let t = t.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = t.strip_prefix("now-") {
        let d = parse_duration(ago).map_err(|e| {
            flag_err(
                flag,
                format!("{t:?}: {e}; write now-DURATION, e.g. now-14d"),
            )
        })?;
        return i64::try_from(d.as_millis())
            .ok()
            .and_then(|ago| now_ms.checked_sub(ago))
            .filter(|t| representable(*t))
            .ok_or_else(|| flag_err(flag, format!("{t:?} reaches before any time there is")));
    }
    if let Ok(secs) = t.parse::<f64>() {
        let ms = secs * 1000.0;
        if secs.is_finite() && secs >= 0.0 && ms < i64::MAX as f64 && representable(ms as i64) {
            return Ok(ms as i64);
        }
        return Err(flag_err(
            flag,
            format!("{t:?} is not a Unix time in seconds"),
        ));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| {
            flag_err(
                flag,
                format!("{t:?} is not a time: use RFC 3339 (2026-11-02T15:04:05Z), Unix seconds, now, or now-DURATION (now-14d)"),
            )
        })
}

/// The window and step to replay, checked against what Google keeps.
pub fn window(
    args: &BacktestArgs,
    now_ms: TimestampMs,
    has_logging: bool,
) -> Result<ReplayOptions, FlagError> {
    let from_ms = parse_time("--from", &args.from, now_ms)?;
    let to_ms = parse_time("--to", &args.to, now_ms)?;
    if from_ms >= to_ms {
        return Err(flag_err(
            "--from",
            format!(
                "{} is not before --to {}: give --from earlier than --to",
                rfc3339(to_datetime(from_ms)),
                rfc3339(to_datetime(to_ms))
            ),
        ));
    }
    if to_ms > now_ms {
        return Err(flag_err(
            "--to",
            format!(
                "{} is in the future; the latest is now ({})",
                rfc3339(to_datetime(to_ms)),
                rfc3339(to_datetime(now_ms))
            ),
        ));
    }
    let (kept, what) = if has_logging {
        (LOGGING_RETENTION_MS, "Cloud Logging keeps entries 30 days")
    } else {
        (
            MONITORING_RETENTION_MS,
            "Cloud Monitoring keeps metrics six weeks",
        )
    };
    if from_ms < now_ms - kept {
        return Err(flag_err(
            "--from",
            format!(
                "{} is older than Google keeps ({what}): the earliest is {}",
                rfc3339(to_datetime(from_ms)),
                rfc3339(to_datetime(now_ms - kept))
            ),
        ));
    }
    let step = match &args.step {
        None => None,
        Some(s) => {
            let d = parse_duration(s).map_err(|e| flag_err("--step", format!("{s:?}: {e}")))?;
            if d < Duration::from_secs(1) {
                return Err(flag_err("--step", format!("{s:?}: at least 1s")));
            }
            Some(d)
        }
    };
    Ok(ReplayOptions {
        from_ms,
        to_ms,
        step,
    })
}

/// `rearguard backtest`: loads the config, connects to Google, then [`run_with`].
pub async fn run(config_path: &Path, args: BacktestArgs) -> anyhow::Result<ExitCode> {
    let loaded = crate::daemon::load_config(config_path).await?;
    let Some(gcp) = loaded.config.gcp.clone() else {
        anyhow::bail!(
            "{}: no gcp: section; the backtest reads history from Google",
            config_path.display()
        );
    };
    let ctx = GcpContext::connect(&gcp, &loaded.base_dir, &prometheus::Registry::new()).await?;
    let now = crate::clock::Clock::system().now_ms();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    run_with(&loaded, &ctx, &args, now, &mut out, &mut err).await
}

/// The backtest with a connected context at `now_ms`; the report goes to
/// `out`, progress and errors to `err`.
pub async fn run_with(
    loaded: &LoadedConfig,
    ctx: &GcpContext,
    args: &BacktestArgs,
    now_ms: TimestampMs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let opts = match window(args, now_ms, !config.cloud_logging.is_empty()) {
        Ok(o) => o,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(ExitCode::from(2));
        }
    };
    let rules = RulesConfig::from_loaded(loaded).map_err(|errs| {
        anyhow::anyhow!(
            "{}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    // The evidence of the first evaluations reaches back this far.
    let lookback = crate::backtest::replay::longest_lookback(config, &rules.files);
    let read_from = opts.from_ms - lookback;
    let long = opts.to_ms - opts.from_ms > 24 * 3_600_000;
    let mut last_shown = std::time::Instant::now();
    let mut show = |line: String, force: bool| {
        if long && (force || last_shown.elapsed() >= Duration::from_secs(1)) {
            last_shown = std::time::Instant::now();
            let _ = writeln!(err, "{line}");
        }
    };
    let mut on_read = |p: ReadProgress| {
        let line = match p {
            ReadProgress::Monitoring { source, upto_ms } => format!(
                "reading cloud_monitoring {source}: up to {}",
                rfc3339(to_datetime(upto_ms))
            ),
            ReadProgress::Logging { query, entries } => {
                format!("reading cloud_logging {query}: {entries} entries")
            }
            ReadProgress::Audit { service, entries } => {
                format!("reading the audit log of {service}: {entries} entries")
            }
        };
        show(line, false);
    };
    let history = match history::read(ctx, config, read_from, opts.to_ms, &mut on_read).await {
        Ok(h) => h,
        Err(e) => {
            writeln!(
                err,
                "error: {e}\nno report: the history could not be read whole"
            )?;
            return Ok(ExitCode::FAILURE);
        }
    };
    show(
        format!(
            "read {} samples; replaying {} → {}",
            history.samples.len(),
            rfc3339(to_datetime(opts.from_ms)),
            rfc3339(to_datetime(opts.to_ms))
        ),
        true,
    );
    let started = std::time::Instant::now();
    let mut on_replay = |t: TimestampMs| {
        show(format!("replayed up to {}", rfc3339(to_datetime(t))), false);
    };
    let result = replay(config, &rules.files, &history, &opts, &mut on_replay).await;
    show(
        format!("replayed in {:.1}s", started.elapsed().as_secs_f64()),
        true,
    );
    let lines = match args.format {
        Format::Json => report::json_lines(&result, opts.from_ms, opts.to_ms),
        Format::Text => report::text(&result, opts.from_ms, opts.to_ms),
    };
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn args(from: &str, to: &str) -> BacktestArgs {
        BacktestArgs {
            from: from.into(),
            to: to.into(),
            step: None,
            format: Format::Json,
        }
    }

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(parse_time("--from", "now", NOW).unwrap(), NOW);
        assert_eq!(
            parse_time("--from", "now-2h", NOW).unwrap(),
            NOW - 7_200_000
        );
        assert_eq!(parse_time("--from", "1800000000", NOW).unwrap(), NOW);
        assert_eq!(
            parse_time("--from", "2027-01-15T08:00:00Z", NOW).unwrap(),
            1_800_000_000_000
        );
        assert_eq!(
            parse_time("--from", "1e300", NOW).unwrap_err().flag,
            "--from"
        );
        assert_eq!(
            parse_time("--from", "now-9999999999999d", NOW)
                .unwrap_err()
                .flag,
            "--from"
        );
        let e = parse_time("--to", "yesterday", NOW).unwrap_err();
        assert_eq!(e.flag, "--to");
        assert!(
            e.to_string()
                .starts_with("--to: \"yesterday\" is not a time"),
            "{e}"
        );
    }

    #[test]
    fn a_window_must_run_forward_inside_what_google_keeps() {
        let e = window(&args("now-1h", "now-2h"), NOW, false).unwrap_err();
        assert_eq!(e.flag, "--from");
        assert!(e.message.contains("is not before --to"), "{e}");
        let e = window(&args("now-43d", "now"), NOW, false).unwrap_err();
        assert_eq!(e.flag, "--from");
        assert!(e.message.contains("six weeks"), "{e}");
        // With log queries, Logging's 30 days bound it.
        assert!(window(&args("now-41d", "now"), NOW, false).is_ok());
        let e = window(&args("now-31d", "now"), NOW, true).unwrap_err();
        assert!(e.message.contains("30 days"), "{e}");
        let e = window(&args("now-1d", "now+1h"), NOW, false).unwrap_err();
        assert_eq!(e.flag, "--to");
        let mut a = args("now-1d", "now");
        a.step = Some("fast".into());
        assert_eq!(window(&a, NOW, false).unwrap_err().flag, "--step");
    }
}
