use super::*;
use promql_parser::label::{MatchOp, Matcher};

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher::new(MatchOp::Equal, name, value)
}

fn re(name: &str, value: &str) -> Matcher {
    let r = regex::Regex::new(&format!("^(?:{value})$")).unwrap();
    Matcher::new(MatchOp::Re(r), name, value)
}

fn names(db: &Tsdb, m: &[Matcher]) -> Vec<String> {
    let mut v: Vec<String> = db
        .select(m, i64::MIN, i64::MAX)
        .into_iter()
        .map(|s| s.labels.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn index_answers_matchers() {
    let db = Tsdb::default();
    db.append_sample(&l(&[("__name__", "up"), ("job", "a")]), 1, 1.0)
        .unwrap();
    db.append_sample(&l(&[("__name__", "up"), ("job", "b")]), 1, 0.0)
        .unwrap();
    db.append_sample(
        &l(&[("__name__", "down"), ("job", "a"), ("x", "1")]),
        1,
        0.0,
    )
    .unwrap();
    assert_eq!(
        names(&db, &[eq("__name__", "up")]),
        vec![r#"up{job="a"}"#, r#"up{job="b"}"#]
    );
    assert_eq!(
        names(&db, &[eq("job", "a"), re("__name__", "d.*")]),
        vec![r#"down{job="a", x="1"}"#]
    );
    // A matcher that matches the empty string also selects series without the label.
    assert_eq!(names(&db, &[eq("__name__", "up"), eq("x", "")]).len(), 2);
    assert_eq!(
        names(&db, &[Matcher::new(MatchOp::NotEqual, "job", "a")]),
        vec![r#"up{job="b"}"#]
    );
    assert!(names(&db, &[eq("__name__", "none")]).is_empty());
    assert_eq!(
        db.stats(),
        TsdbStats {
            series: 3,
            samples: 3
        }
    );
}

#[test]
fn select_returns_only_the_range() {
    let db = Tsdb::default();
    let s = l(&[("__name__", "m")]);
    for i in 0..500 {
        db.append_sample(&s, i * 10, i as f64).unwrap();
    }
    let got = db.select(&[eq("__name__", "m")], 1000, 2000);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].timestamps.first(), Some(&1000));
    assert_eq!(got[0].timestamps.last(), Some(&2000));
    assert_eq!(got[0].values.len(), 101);
    assert!(db.select(&[eq("__name__", "m")], 6000, 7000).is_empty());
}

#[test]
fn out_of_order_and_duplicates_are_rejected() {
    let db = Tsdb::default();
    let s = l(&[("__name__", "m")]);
    db.append_sample(&s, 100, 1.0).unwrap();
    assert!(matches!(
        db.append_sample(&s, 50, 1.0),
        Err(AppendError::OutOfOrder { .. })
    ));
    assert!(db.append_sample(&s, 100, 1.0).is_ok());
    assert!(matches!(
        db.append_sample(&s, 100, 2.0),
        Err(AppendError::Duplicate { .. })
    ));
    db.append_batch(&[
        Sample {
            labels: s.clone(),
            timestamp_ms: 200,
            value: 2.0,
        },
        Sample {
            labels: s.clone(),
            timestamp_ms: 150,
            value: 9.0,
        },
    ]);
    let got = db.select(&[eq("__name__", "m")], 0, 1000);
    assert_eq!(got[0].timestamps, vec![100, 200]);
    assert_eq!(got[0].values, vec![1.0, 2.0]);
}

#[test]
fn stale_markers_are_written_once_after_the_last_sample() {
    let db = Tsdb::default();
    let s = l(&[("__name__", "m")]);
    db.append_sample(&s, 100, 1.0).unwrap();
    db.mark_stale(&[s.clone(), l(&[("__name__", "unknown")])], 200);
    db.mark_stale(std::slice::from_ref(&s), 300);
    let got = db.select(&[eq("__name__", "m")], 0, 1000);
    assert_eq!(got[0].timestamps, vec![100, 200]);
    assert!(is_stale_nan(got[0].values[1]));
    assert!(!is_stale_nan(f64::NAN));
    assert_eq!(db.stats().series, 1);
}

#[test]
fn retention_bounds_memory() {
    let hour = 3_600_000;
    let db = Tsdb::new(hour);
    let a = l(&[("__name__", "a")]);
    let b = l(&[("__name__", "b")]);
    db.append_sample(&b, 0, 1.0).unwrap();
    // 10 hours of 10 s samples: trimming on append keeps about one hour.
    for i in 0..3600 {
        db.append_sample(&a, i * 10_000, 1.0).unwrap();
    }
    let kept = db.stats().samples;
    assert!(kept <= 360 + CHUNK_SAMPLES + 1, "kept {kept}");
    assert!(matches!(
        db.append_sample(&a, 0, 1.0),
        Err(AppendError::TooOld { .. })
    ));
    // gc drops the series that stopped, and its index entries.
    db.gc(36_000_000);
    assert_eq!(db.stats().series, 1);
    assert!(db
        .select(&[eq("__name__", "b")], i64::MIN, i64::MAX)
        .is_empty());
    assert!(db.series_labels(&[eq("__name__", "b")]).is_empty());
    db.append_sample(&b, 36_000_000, 2.0).unwrap();
    assert_eq!(db.stats().series, 2);
    db.gc(100 * hour);
    assert_eq!(
        db.stats(),
        TsdbStats {
            series: 0,
            samples: 0
        }
    );
}

#[test]
fn unordered_insert_for_loaders() {
    let db = Tsdb::default();
    let s = l(&[("__name__", "m")]);
    db.insert_unordered(&s, 100, 1.0);
    db.insert_unordered(&s, 0, 0.5);
    db.insert_unordered(&s, 100, 2.0);
    let got = db.select(&[eq("__name__", "m")], 0, 1000);
    assert_eq!(got[0].timestamps, vec![0, 100]);
    assert_eq!(got[0].values, vec![0.5, 2.0]);
    assert_eq!(db.stats().samples, 2);
}

#[test]
fn metrics_register() {
    let db = Tsdb::default();
    let reg = prometheus::Registry::new();
    db.register_metrics(&reg).unwrap();
    db.append_sample(&l(&[("__name__", "m")]), 1, 1.0).unwrap();
    let names: Vec<String> = reg.gather().iter().map(|f| f.name().to_string()).collect();
    assert!(names.contains(&"rearguard_tsdb_series".to_string()));
}

#[test]
fn clear_then_reload() {
    let db = Tsdb::default();
    let s = l(&[("__name__", "m"), ("a", "1")]);
    db.insert_unordered(&s, 0, 1.0);
    db.clear();
    db.insert_unordered(&s, 0, 2.0);
    db.insert_unordered(&s, 300_000, 3.0);
    let got = db.select(&[eq("__name__", "m")], 0, 1_000_000);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].values, vec![2.0, 3.0]);
}

#[tokio::test(start_paused = true)]
async fn gc_task_runs_on_the_clock_and_stops() {
    let clock = crate::clock::Clock::starting_at(0);
    let db = Arc::new(Tsdb::new(60_000));
    db.append_sample(&l(&[("__name__", "m")]), 0, 1.0).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(db.clone().run_gc(
        clock.clone(),
        std::time::Duration::from_secs(30),
        rx,
    ));
    tokio::time::sleep(std::time::Duration::from_secs(95)).await;
    assert_eq!(db.stats().series, 0);
    tx.send(true).unwrap();
    task.await.unwrap();
    db.set_retention_ms(1);
    assert_eq!(db.retention_ms(), 1);
}

mod durable {
    use super::*;
    use std::path::Path;

    const OPTS: DurableOptions = DurableOptions {
        flush_every: Duration::from_secs(1),
        checkpoint_every: Duration::from_secs(3600),
    };
    const HOUR: i64 = 3_600_000;
    const T0: i64 = 1_700_000_000_000;

    fn open(dir: &Path, now: i64) -> (Tsdb, ReplayReport) {
        Tsdb::open_durable(dir, HOUR, now, OPTS).unwrap()
    }

    fn up() -> Labels {
        l(&[("__name__", "probe_success"), ("probe", "t0")])
    }

    fn samples(db: &Tsdb, mint: i64, maxt: i64) -> Vec<(i64, u64)> {
        db.select(&[eq("probe", "t0")], mint, maxt)
            .into_iter()
            .flat_map(|s| {
                s.timestamps
                    .into_iter()
                    .zip(s.values.into_iter().map(f64::to_bits))
            })
            .collect()
    }

    fn fill(db: &Tsdb, from: i64, n: i64) {
        for i in 0..n {
            db.append_sample(&up(), T0 + (from + i) * 1000, ((from + i) % 7) as f64)
                .unwrap();
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn restart_keeps_history_across_wal_and_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (db, report) = open(dir.path(), T0);
        assert_eq!((report.series, report.samples), (0, 0));
        fill(&db, 0, 300);
        db.flush_wal().unwrap();
        drop(db);

        let (db, report) = open(dir.path(), T0 + 300_000);
        assert_eq!((report.series, report.samples), (1, 300));
        assert!(report.set_aside.is_empty());
        // Appends go on after the restart; a checkpoint, then more WAL.
        fill(&db, 300, 100);
        db.checkpoint_now().unwrap();
        fill(&db, 400, 50);
        db.mark_stale_at(&[up()], T0 + 500_000);
        db.flush_wal().unwrap();
        let want = samples(&db, i64::MIN, i64::MAX);
        assert_eq!(want.len(), 451);
        drop(db);

        let (db, report) = open(dir.path(), T0 + 500_000);
        assert_eq!(report.samples, 451);
        let got = samples(&db, i64::MIN, i64::MAX);
        assert_eq!(got, want);
        assert!(is_stale_nan(f64::from_bits(got[450].1)));
        // A range read spanning the first restart.
        assert_eq!(samples(&db, T0 + 290_000, T0 + 309_000).len(), 20);
        // Only the newest checkpoint and the segments after it remain.
        let names = files(dir.path());
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("checkpoint."))
                .count(),
            1,
            "{names:?}"
        );
        // The series keeps appending after a replayed sealed chunk.
        db.append_sample(&up(), T0 + 501_000, 1.0).unwrap();
        assert_eq!(db.stats().samples, 452);
    }

    #[test]
    fn kill_without_flush_loses_only_the_unflushed_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = open(dir.path(), T0);
        fill(&db, 0, 100);
        db.flush_wal().unwrap();
        fill(&db, 100, 10);
        // No flush: as after kill -9 between two flushes.
        drop(db);
        let (db, _) = open(dir.path(), T0 + 110_000);
        assert_eq!(samples(&db, i64::MIN, i64::MAX).len(), 100);
    }

    #[test]
    fn truncated_wal_is_set_aside_and_its_head_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = open(dir.path(), T0);
        fill(&db, 0, 100);
        db.flush_wal().unwrap();
        drop(db);
        let seg = dir.path().join("wal.0000000000");
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 5)
            .unwrap();

        let (db, report) = open(dir.path(), T0 + 100_000);
        assert_eq!(report.set_aside.len(), 1);
        assert!(dir.path().join("wal.0000000000.corrupt").exists());
        assert_eq!(samples(&db, i64::MIN, i64::MAX).len(), 99);
        assert_eq!(db.wal_damaged.get(), 1);
        // What was read from the set-aside file was checkpointed at once.
        fill(&db, 100, 1);
        db.flush_wal().unwrap();
        drop(db);
        let (db, report) = open(dir.path(), T0 + 101_000);
        assert!(report.set_aside.is_empty());
        assert_eq!(samples(&db, i64::MIN, i64::MAX).len(), 100);
    }

    #[test]
    fn corrupt_checkpoint_is_set_aside_and_startup_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = open(dir.path(), T0);
        fill(&db, 0, 100);
        db.append_sample(&l(&[("__name__", "other")]), T0, 1.0)
            .unwrap();
        db.checkpoint_now().unwrap();
        fill(&db, 100, 10);
        db.flush_wal().unwrap();
        drop(db);
        let ckp = dir.path().join("checkpoint.0000000001");
        let mut bytes = std::fs::read(&ckp).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&ckp, &bytes).unwrap();

        let (db, report) = open(dir.path(), T0 + 110_000);
        assert_eq!(report.set_aside.len(), 1);
        assert!(dir.path().join("checkpoint.0000000001.corrupt").exists());
        // The first series frame was intact; the damaged one is lost, and the
        // WAL after the checkpoint still replays for the series it names.
        assert_eq!(samples(&db, i64::MIN, i64::MAX).len(), 110);
        assert!(db
            .select(&[eq("__name__", "other")], i64::MIN, i64::MAX)
            .is_empty());
        // Garbage in place of a WAL segment does not stop startup either.
        drop(db);
        std::fs::write(dir.path().join("wal.0000000099"), b"not a wal").unwrap();
        let (_db, report) = open(dir.path(), T0 + 110_000);
        assert_eq!(report.set_aside.len(), 1);
    }

    #[test]
    fn retention_applies_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = open(dir.path(), T0);
        fill(&db, 0, 100);
        db.flush_wal().unwrap();
        drop(db);
        // Two hours later, with one hour of retention: nothing is replayed.
        let (db, report) = open(dir.path(), T0 + 2 * HOUR);
        assert_eq!((report.series, report.samples), (0, 0));
        // A checkpoint drops the old segments from disk.
        db.checkpoint_now().unwrap();
        let names = files(dir.path());
        assert!(!names.contains(&"wal.0000000000".to_string()), "{names:?}");
        drop(db);
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total < 64, "{total} bytes left on disk");
    }

    #[test]
    fn checkpoints_keep_only_the_retention_window_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = open(dir.path(), T0);
        // Two hours at 10 s, a checkpoint every half hour as the daemon would.
        for half_hour in 0..4 {
            for i in 0..180 {
                let t = T0 + half_hour * HOUR / 2 + i * 10_000;
                db.append_sample(&up(), t, 1.0).unwrap();
            }
            db.gc(T0 + (half_hour + 1) * HOUR / 2);
            db.checkpoint_now().unwrap();
        }
        fill(&db, 7200, 1);
        db.flush_wal().unwrap();
        // One checkpoint and the segment after it; every older file is gone.
        let names = files(dir.path());
        assert_eq!(
            names,
            ["checkpoint.0000000004", "wal.0000000004"],
            "{names:?}"
        );
        // The checkpoint holds the last hour and at most one chunk before it.
        let read =
            wal::read_checkpoint(&std::fs::read(dir.path().join("checkpoint.0000000004")).unwrap());
        assert!(!read.damaged);
        let oldest = read
            .items
            .iter()
            .flat_map(|s| s.chunks.iter())
            .filter_map(|c| c.min_t())
            .min()
            .unwrap();
        let kept: usize = read
            .items
            .iter()
            .flat_map(|s| s.chunks.iter())
            .map(|c| c.len())
            .sum();
        assert!(oldest >= T0 + HOUR - 120 * 10_000, "oldest {}", oldest - T0);
        assert!((360..=360 + 120).contains(&kept), "{kept} samples on disk");
    }

    #[test]
    fn in_memory_tsdb_needs_no_replay() {
        let db = Tsdb::default();
        assert!(db.replayed());
        db.flush_wal().unwrap();
        db.checkpoint_now().unwrap();
    }
}
