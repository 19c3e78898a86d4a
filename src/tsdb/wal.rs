//! On-disk formats of the durable tsdb: a write-ahead log of series
//! definitions and samples in numbered segment files, and checkpoints that
//! hold every series with its compressed chunks.
//!
//! Both are a magic header followed by frames `[len u32][crc32 u32][payload]`
//! (little-endian). A frame that is short, fails its checksum or does not
//! parse ends the file: everything before it is used, the file is reported
//! and set aside (renamed `*.corrupt`), and startup goes on.
//!
//! `checkpoint.N` holds the state after every segment numbered below N, so
//! replay is: the newest readable checkpoint, then the segments from N on.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::chunk::Chunk;
use crate::labels::Labels;

pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"RGWAL001";
pub(super) const CHECKPOINT_MAGIC: &[u8; 8] = b"RGCKP001";

const KIND_SERIES: u8 = 1;
const KIND_SAMPLE: u8 = 2;
const KIND_CHECKPOINT_SERIES: u8 = 3;

/// A series is named in the log once (per segment stream) by a small id.
pub(super) type WalId = u32;

/// One decoded WAL record.
#[derive(Debug, PartialEq)]
pub(super) enum Record {
    Series { id: WalId, labels: Labels },
    Sample { id: WalId, t: i64, v: f64 },
}

/// One series of a checkpoint.
pub(super) struct CheckpointSeries {
    /// The id later WAL records use for this series.
    pub id: WalId,
    pub labels: Labels,
    pub chunks: Vec<Chunk>,
}

fn crc32(bytes: &[u8]) -> u32 {
    // CRC-32 (IEEE, reflected), bitwise: fast enough for MB/s of WAL and
    // avoids a dependency.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Appends one frame around the payload written by `write`.
fn frame(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    write(out);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_labels(out: &mut Vec<u8>, labels: &Labels) {
    out.extend_from_slice(&(labels.len() as u32).to_le_bytes());
    for l in labels.iter() {
        for s in [&*l.name, &*l.value] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

pub(super) fn put_series(out: &mut Vec<u8>, id: WalId, labels: &Labels) {
    frame(out, |p| {
        p.push(KIND_SERIES);
        p.extend_from_slice(&id.to_le_bytes());
        put_labels(p, labels);
    });
}

pub(super) fn put_sample(out: &mut Vec<u8>, id: WalId, t: i64, v: f64) {
    frame(out, |p| {
        p.push(KIND_SAMPLE);
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&t.to_le_bytes());
        p.extend_from_slice(&v.to_bits().to_le_bytes());
    });
}

pub(super) fn put_checkpoint_series<'a>(
    out: &mut Vec<u8>,
    id: WalId,
    labels: &Labels,
    chunks: impl ExactSizeIterator<Item = &'a Chunk>,
) {
    frame(out, |p| {
        p.push(KIND_CHECKPOINT_SERIES);
        p.extend_from_slice(&id.to_le_bytes());
        put_labels(p, labels);
        p.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
        for c in chunks {
            c.encode_into(p);
        }
    });
}

fn take<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    if input.len() < N {
        return None;
    }
    let (head, rest) = input.split_at(N);
    *input = rest;
    head.try_into().ok()
}

fn get_u32(input: &mut &[u8]) -> Option<u32> {
    take::<4>(input).map(u32::from_le_bytes)
}

fn get_labels(input: &mut &[u8]) -> Option<Labels> {
    let n = get_u32(input)? as usize;
    let mut pairs = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let mut two = [String::new(), String::new()];
        for s in &mut two {
            let len = get_u32(input)? as usize;
            if input.len() < len {
                return None;
            }
            let (bytes, rest) = input.split_at(len);
            *s = std::str::from_utf8(bytes).ok()?.to_string();
            *input = rest;
        }
        let [name, value] = two;
        pairs.push((name, value));
    }
    Some(Labels::from_pairs(pairs))
}

/// Splits a file body (after the magic) into frame payloads; the second
/// value is true when the file ends in a bad or partial frame.
fn frames(mut body: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out = Vec::new();
    while !body.is_empty() {
        let mut head = body;
        let (Some(len), Some(crc)) = (get_u32(&mut head), get_u32(&mut head)) else {
            return (out, true);
        };
        let len = len as usize;
        if head.len() < len {
            return (out, true);
        }
        let payload = &head[..len];
        if crc32(payload) != crc {
            return (out, true);
        }
        out.push(payload);
        body = &head[len..];
    }
    (out, false)
}

fn parse_record(mut p: &[u8]) -> Option<Record> {
    let input = &mut p;
    let [kind] = take::<1>(input)?;
    let id = get_u32(input)?;
    let record = match kind {
        KIND_SERIES => Record::Series {
            id,
            labels: get_labels(input)?,
        },
        KIND_SAMPLE => Record::Sample {
            id,
            t: i64::from_le_bytes(take::<8>(input)?),
            v: f64::from_bits(u64::from_le_bytes(take::<8>(input)?)),
        },
        _ => return None,
    };
    input.is_empty().then_some(record)
}

fn parse_checkpoint_series(mut p: &[u8]) -> Option<CheckpointSeries> {
    let input = &mut p;
    let [kind] = take::<1>(input)?;
    if kind != KIND_CHECKPOINT_SERIES {
        return None;
    }
    let id = get_u32(input)?;
    let labels = get_labels(input)?;
    let n = get_u32(input)? as usize;
    let mut chunks = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        chunks.push(Chunk::decode_from(input)?);
    }
    input
        .is_empty()
        .then_some(CheckpointSeries { id, labels, chunks })
}

/// What reading one file gave: its items, and whether it was damaged.
pub(super) struct Read<T> {
    pub items: Vec<T>,
    pub damaged: bool,
}

fn read_file<T>(bytes: &[u8], magic: &[u8; 8], parse: impl Fn(&[u8]) -> Option<T>) -> Read<T> {
    let Some(body) = bytes.strip_prefix(magic.as_slice()) else {
        return Read {
            items: Vec::new(),
            damaged: true,
        };
    };
    let (payloads, mut damaged) = frames(body);
    let mut items = Vec::with_capacity(payloads.len());
    for p in payloads {
        match parse(p) {
            Some(item) => items.push(item),
            None => {
                damaged = true;
                break;
            }
        }
    }
    Read { items, damaged }
}

pub(super) fn read_segment(bytes: &[u8]) -> Read<Record> {
    read_file(bytes, SEGMENT_MAGIC, parse_record)
}

pub(super) fn read_checkpoint(bytes: &[u8]) -> Read<CheckpointSeries> {
    read_file(bytes, CHECKPOINT_MAGIC, parse_checkpoint_series)
}

/// The files of a tsdb directory, by kind and number.
#[derive(Debug, Default)]
pub(super) struct DirFiles {
    pub segments: Vec<u64>,
    pub checkpoints: Vec<u64>,
}

pub(super) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal.{n:010}"))
}

pub(super) fn checkpoint_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("checkpoint.{n:010}"))
}

pub(super) fn list(dir: &Path) -> io::Result<DirFiles> {
    let mut files = DirFiles::default();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("wal.").and_then(|n| n.parse().ok()) {
            files.segments.push(n);
        } else if let Some(n) = name
            .strip_prefix("checkpoint.")
            .and_then(|n| n.parse().ok())
        {
            files.checkpoints.push(n);
        }
    }
    files.segments.sort_unstable();
    files.checkpoints.sort_unstable();
    Ok(files)
}

/// Renames a damaged file to `<name>.corrupt` so it is kept for a human but
/// not read again.
pub(super) fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    let aside = PathBuf::from(aside);
    fs::rename(path, &aside)?;
    Ok(aside)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync dir).
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Opens a new segment file with its header.
pub(super) fn create_segment(dir: &Path, n: u64) -> io::Result<fs::File> {
    let path = segment_path(dir, n);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    f.write_all(SEGMENT_MAGIC)?;
    f.sync_all()?;
    sync_dir(&path)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip_and_a_cut_tail_is_reported() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let mut bytes = SEGMENT_MAGIC.to_vec();
        put_series(&mut bytes, 3, &labels);
        put_sample(
            &mut bytes,
            3,
            1000,
            f64::from_bits(super::super::STALE_NAN_BITS),
        );
        let whole = read_segment(&bytes);
        assert!(!whole.damaged);
        assert_eq!(whole.items.len(), 2);
        assert_eq!(whole.items[0], Record::Series { id: 3, labels });
        match whole.items[1] {
            Record::Sample { id, t, v } => {
                assert_eq!((id, t), (3, 1000));
                assert!(super::super::is_stale_nan(v));
            }
            _ => panic!("not a sample"),
        }
        let cut = read_segment(&bytes[..bytes.len() - 3]);
        assert!(cut.damaged);
        assert_eq!(cut.items.len(), 1);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let bad = read_segment(&flipped);
        assert!(bad.damaged);
        assert_eq!(bad.items.len(), 1);
        assert!(read_segment(b"nonsense").damaged);
    }
}
