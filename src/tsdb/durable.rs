//! A tsdb that survives restarts: replay from `state_dir` at startup, a WAL
//! flushed every `flush_every` and a checkpoint every `checkpoint_every`
//! (which also drops segments and, through gc, history past retention).
//!
//! All file I/O is blocking and runs on a blocking thread
//! ([`tokio::task::spawn_blocking`]); appends only add bytes to an in-memory
//! buffer under the lock they already take.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wal::{self, Record, WalId};
use super::{Chunk, SeriesId, Tsdb};
use crate::labels::Labels;

/// How often the durable tsdb writes to disk.
#[derive(Clone, Copy, Debug)]
pub struct DurableOptions {
    /// WAL buffer → disk (and fsync). `kill -9` loses at most this much.
    pub flush_every: Duration,
    /// Full checkpoint; WAL segments before it are deleted.
    pub checkpoint_every: Duration,
}

impl Default for DurableOptions {
    fn default() -> Self {
        Self {
            flush_every: Duration::from_secs(1),
            checkpoint_every: Duration::from_secs(15 * 60),
        }
    }
}

/// What startup replay found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub series: usize,
    pub samples: usize,
    /// Damaged files, renamed `*.corrupt` (their readable part was used).
    pub set_aside: Vec<PathBuf>,
    pub elapsed: Duration,
}

/// The open WAL segment of a durable tsdb.
pub(super) struct Writer {
    dir: PathBuf,
    segment: u64,
    file: fs::File,
    last_checkpoint: Instant,
    checkpoint_every: Duration,
}

impl Tsdb {
    /// Opens (creating) the durable tsdb in `dir`: loads the newest readable
    /// checkpoint and replays the WAL after it, dropping samples older than
    /// `now_ms - retention_ms`. Damaged files are reported, renamed and
    /// skipped past. Blocking: call it from a blocking thread.
    pub fn open_durable(
        dir: &Path,
        retention_ms: i64,
        now_ms: i64,
        options: DurableOptions,
    ) -> io::Result<(Tsdb, ReplayReport)> {
        let started = Instant::now();
        fs::create_dir_all(dir)?;
        let db = Tsdb::new(retention_ms);
        db.replay_done.store(false, Ordering::Relaxed);
        let cutoff = now_ms.saturating_sub(db.retention_ms());
        let files = wal::list(dir)?;
        let mut report = ReplayReport::default();
        let mut ids: std::collections::HashMap<WalId, Labels> = Default::default();
        let mut first_segment = 0;
        {
            let mut inner = db.write();
            for &n in files.checkpoints.iter().rev() {
                let path = wal::checkpoint_path(dir, n);
                let read = wal::read_checkpoint(&fs::read(&path)?);
                if read.damaged {
                    db.report_damaged(&path, &mut report);
                }
                let usable = !read.items.is_empty() || !read.damaged;
                for s in read.items {
                    ids.insert(s.id, s.labels.clone());
                    inner.restore(&s.labels, s.chunks, cutoff);
                }
                if usable {
                    first_segment = n;
                    break;
                }
            }
            for &n in files.segments.iter().filter(|&&n| n >= first_segment) {
                let path = wal::segment_path(dir, n);
                let read = wal::read_segment(&fs::read(&path)?);
                if read.damaged {
                    db.report_damaged(&path, &mut report);
                }
                for record in read.items {
                    match record {
                        Record::Series { id, labels } => {
                            ids.insert(id, labels);
                        }
                        Record::Sample { id, t, v } => {
                            if let Some(labels) = ids.get(&id) {
                                // Replay keeps the live append rules:
                                // duplicates and too-old samples drop out.
                                let _ = inner.append(labels, t, v, cutoff);
                            }
                        }
                    }
                }
            }
            // Name every live series in the new segment: ids are the
            // in-memory ones from here on.
            let mut buf = Vec::new();
            for (id, s) in inner.series.iter().enumerate() {
                if let Some(s) = s {
                    wal::put_series(&mut buf, id as SeriesId, &s.labels);
                }
            }
            inner.wal_buf = Some(buf);
            report.series = inner.live_series;
            report.samples = inner.samples;
            db.series_gauge.set(inner.live_series as i64);
        }
        let next = files
            .segments
            .last()
            .map_or(0, |n| n + 1)
            .max(files.checkpoints.last().copied().unwrap_or(0));
        let file = wal::create_segment(dir, next)?;
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            segment: next,
            file,
            last_checkpoint: Instant::now(),
            checkpoint_every: options.checkpoint_every,
        };
        if !report.set_aside.is_empty() {
            // What was read from the set-aside files lives only in memory
            // now: write it down before anything else.
            db.checkpoint(&mut writer)?;
        }
        *db.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        report.elapsed = started.elapsed();
        db.replay_done.store(true, Ordering::Relaxed);
        tracing::info!(
            series = report.series,
            samples = report.samples,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "tsdb history replayed"
        );
        Ok((db, report))
    }

    fn report_damaged(&self, path: &Path, report: &mut ReplayReport) {
        self.wal_damaged.inc();
        match wal::set_aside(path) {
            Ok(aside) => {
                tracing::warn!(file = %path.display(), set_aside = %aside.display(),
                    "tsdb file truncated or corrupt: its readable part was loaded, the file set aside");
                report.set_aside.push(aside);
            }
            Err(e) => tracing::warn!(file = %path.display(), error = %e,
                "tsdb file truncated or corrupt and could not be renamed"),
        }
    }

    /// Whether startup replay is over (always true for an in-memory tsdb).
    pub fn replayed(&self) -> bool {
        self.replay_done.load(Ordering::Relaxed)
    }

    /// Writes buffered WAL records to disk and fsyncs; checkpoints when one
    /// is due. A no-op for an in-memory tsdb. Blocking.
    pub fn flush_wal(&self) -> io::Result<()> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(writer) = guard.as_mut() else {
            return Ok(());
        };
        if writer.last_checkpoint.elapsed() >= writer.checkpoint_every {
            return self.checkpoint(writer);
        }
        let buf = self
            .write()
            .wal_buf
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        if !buf.is_empty() {
            writer.file.write_all(&buf)?;
            writer.file.sync_data()?;
        }
        Ok(())
    }

    /// Writes a checkpoint now (see [`Tsdb::flush_wal`]). Blocking.
    pub fn checkpoint_now(&self) -> io::Result<()> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(writer) => self.checkpoint(writer),
            None => Ok(()),
        }
    }

    fn checkpoint(&self, writer: &mut Writer) -> io::Result<()> {
        // One lock hold for both, so the checkpoint is exactly the state
        // after the records flushed to the old segment. Only a copy is made
        // under it (labels are shared, chunk bytes copied): encoding and
        // checksums happen after it is released, so appends and queries do
        // not wait for the serialisation.
        let (buf, copy) = {
            let mut inner = self.write();
            let buf = inner
                .wal_buf
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let copy: Vec<(SeriesId, Labels, Vec<Chunk>)> = inner
                .series
                .iter()
                .enumerate()
                .filter_map(|(id, s)| {
                    let s = s.as_ref()?;
                    Some((
                        id as SeriesId,
                        s.labels.clone(),
                        s.chunks.iter().cloned().collect(),
                    ))
                })
                .collect();
            (buf, copy)
        };
        let mut snapshot = wal::CHECKPOINT_MAGIC.to_vec();
        for (id, labels, chunks) in copy {
            wal::put_checkpoint_series(&mut snapshot, id, &labels, chunks.iter());
        }
        writer.file.write_all(&buf)?;
        writer.file.sync_data()?;
        let n = writer.segment + 1;
        writer.file = wal::create_segment(&writer.dir, n)?;
        writer.segment = n;
        wal::write_atomic(&wal::checkpoint_path(&writer.dir, n), &snapshot)?;
        writer.last_checkpoint = Instant::now();
        // Everything before checkpoint n is in it.
        let files = wal::list(&writer.dir)?;
        for s in files.segments.into_iter().filter(|&s| s < n) {
            fs::remove_file(wal::segment_path(&writer.dir, s))?;
        }
        for c in files.checkpoints.into_iter().filter(|&c| c < n) {
            fs::remove_file(wal::checkpoint_path(&writer.dir, c))?;
        }
        Ok(())
    }

    /// Flushes the WAL every `flush_every` on a blocking thread until
    /// `shutdown`, then flushes once more.
    pub async fn run_wal(
        self: Arc<Self>,
        flush_every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(flush_every) => false,
                r = shutdown.wait_for(|stop| *stop) => { let _ = r; true }
            };
            let db = self.clone();
            match tokio::task::spawn_blocking(move || db.flush_wal()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "tsdb WAL write failed"),
                Err(e) => tracing::warn!(error = %e, "tsdb WAL task failed"),
            }
            if stop {
                return;
            }
        }
    }
}

impl super::Inner {
    /// Puts a checkpointed series back, without chunks wholly before `cutoff`.
    fn restore(&mut self, labels: &Labels, chunks: Vec<Chunk>, cutoff: i64) {
        let chunks: std::collections::VecDeque<Chunk> = chunks
            .into_iter()
            .filter(|c| c.max_t().is_some_and(|t| t >= cutoff))
            .collect();
        if chunks.is_empty() {
            return;
        }
        let id = self.get_or_create(labels);
        if let Some(s) = self.series[id as usize].as_mut() {
            // A series seen twice (should not happen) keeps the first copy.
            if s.chunks.is_empty() {
                self.samples += chunks.iter().map(Chunk::len).sum::<usize>();
                s.chunks = chunks;
            }
        }
    }
}
