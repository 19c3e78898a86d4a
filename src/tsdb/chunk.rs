//! Compressed sample chunks in the style of Prometheus's `chunkenc` XOR
//! chunks: timestamps as delta-of-delta, values as the XOR with the previous
//! value (Gorilla). A regular series (steady interval, a value that rarely
//! changes) costs one to two bits per sample plus a few bytes per chunk.
//!
//! Values are stored by their bit pattern, so NaN payloads (the stale
//! marker), ±Inf and -0.0 come back exactly as written.

/// A bit stream: appended most significant bit first.
#[derive(Clone, Debug, Default)]
struct Bits {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full or there is none).
    used_in_last: u8,
}

impl Bits {
    fn len_bits(&self) -> u32 {
        let unused = if self.used_in_last == 0 {
            0
        } else {
            8 - u32::from(self.used_in_last)
        };
        (self.bytes.len() as u32 * 8).saturating_sub(unused)
    }

    fn push_bit(&mut self, bit: bool) {
        if self.used_in_last == 0 {
            self.bytes.push(0);
        }
        if bit {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 0x80 >> self.used_in_last;
            }
        }
        self.used_in_last = (self.used_in_last + 1) % 8;
    }

    /// Appends the low `n` bits of `value` (n ≤ 64), most significant first.
    fn push_bits(&mut self, value: u64, n: u8) {
        let mut left = n;
        while left > 0 {
            if self.used_in_last == 0 {
                self.bytes.push(0);
            }
            let free = 8 - self.used_in_last;
            let take = free.min(left);
            let shift = left - take;
            let chunk = ((value >> shift) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= chunk << (free - take);
            }
            self.used_in_last = (self.used_in_last + take) % 8;
            left -= take;
        }
    }
}

/// Reads a bit stream written by [`Bits`] through a 64-bit register that
/// is refilled a word at a time: range reads decode every sample of the
/// chunks they touch, so this is the hot loop of a rule evaluation.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next byte of `bytes` not yet in `buf`.
    next: usize,
    /// Upcoming bits, left-aligned; only the first `valid` count. The bits
    /// after them are zero or the stream's own next bits (a refill ORs the
    /// same bits in again).
    buf: u64,
    valid: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            next: 0,
            buf: 0,
            valid: 0,
        }
    }

    /// A reader starting at bit `bit_pos` (past the end reads nothing).
    fn at(bytes: &'a [u8], bit_pos: u32) -> Self {
        let mut r = Self::new(bytes);
        r.next = (bit_pos / 8) as usize;
        r.refill();
        let skip = bit_pos % 8;
        if r.valid >= skip {
            r.consume(skip);
        } else {
            r.valid = 0;
        }
        r
    }

    /// Loads whole bytes until at least 57 bits are valid or the stream ends.
    /// Out of line: once per word, where the reads are once per field.
    #[inline(never)]
    fn refill(&mut self) {
        if let Some(word) = self.bytes.get(self.next..self.next + 8) {
            let word = u64::from_be_bytes(word.try_into().unwrap_or_default());
            self.buf |= word >> self.valid;
            let whole_bytes = (63 - self.valid) / 8;
            self.next += whole_bytes as usize;
            self.valid += whole_bytes * 8;
        } else {
            while self.valid <= 56 {
                let Some(&byte) = self.bytes.get(self.next) else {
                    return;
                };
                self.buf |= u64::from(byte) << (56 - self.valid);
                self.next += 1;
                self.valid += 8;
            }
        }
    }

    /// Consumes `n` bits (n ≤ 56) that are known to be valid.
    #[inline(always)]
    fn consume(&mut self, n: u32) -> u64 {
        let v = if n == 0 { 0 } else { self.buf >> (64 - n) };
        self.buf = self.buf.checked_shl(n).unwrap_or(0);
        self.valid -= n;
        v
    }

    #[inline]
    fn bit(&mut self) -> Option<bool> {
        if self.valid == 0 {
            self.refill();
            if self.valid == 0 {
                return None;
            }
        }
        Some(self.consume(1) == 1)
    }

    /// The next `n` bits (n ≤ 64) as the low bits of the result.
    #[inline(always)]
    fn bits(&mut self, n: u8) -> Option<u64> {
        let n = u32::from(n);
        if n > 56 {
            return self.bits_wide(n);
        }
        if self.valid < n {
            self.refill();
            if self.valid < n {
                return None;
            }
        }
        Some(self.consume(n))
    }

    /// More bits than one refill guarantees (57 to 64), in two reads.
    #[inline(never)]
    fn bits_wide(&mut self, n: u32) -> Option<u64> {
        let high = self.bits((n - 32) as u8)?;
        let low = self.bits(32)?;
        Some((high << 32) | low)
    }

    /// Counts up to `max` one bits (max ≤ 56) and consumes them, plus the
    /// zero that ends them when there are fewer than `max`.
    #[inline]
    fn ones_then_zero(&mut self, max: u32) -> Option<u32> {
        if self.valid <= max {
            self.refill();
        }
        let ones = (!self.buf).leading_zeros().min(max);
        let used = ones + u32::from(ones < max);
        if used > self.valid {
            return None;
        }
        self.consume(used);
        Some(ones)
    }
}

/// Delta-of-delta buckets: (prefix, prefix length, value bits). Prometheus's
/// XOR chunk uses 14/17/20 bits; its scrapes are aligned to the interval, so
/// most delta-of-deltas are 0. Probe timestamps carry milliseconds of
/// scheduling jitter, so the first bucket is the Gorilla paper's 7 bits
/// (±64 ms): 10 bits a timestamp instead of 16.
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 7), (0b110, 3, 14), (0b1110, 4, 20)];

fn fits(v: i64, bits: u8) -> bool {
    let half = 1i64 << (bits - 1);
    -half <= v && v < half
}

/// One chunk of samples, strictly ascending in time. The appender state
/// lives alongside; a sealed chunk drops it with [`Chunk::seal`].
#[derive(Clone, Debug)]
pub struct Chunk {
    bits: Bits,
    count: u16,
    min_t: i64,
    max_t: i64,
    /// Appender state (for the open chunk only).
    app: Option<Box<AppendState>>,
}

#[derive(Clone, Debug)]
struct AppendState {
    delta: i64,
    value_bits: u64,
    leading: u8,
    trailing: u8,
    /// Where a decoder may start inside this chunk, one every
    /// [`SEEK_EVERY`] samples: rules read the newest minutes, which lie in
    /// the open chunk, and without these every read would decode it from
    /// its first sample. Dropped with the rest of the state at seal, so
    /// they cost a few bytes per series, not per sample; allocated at the
    /// first, so a series of a few samples pays one pointer.
    seeks: Option<Box<[Cursor; SEEKS]>>,
}

/// Samples between the open chunk's seek points.
const SEEK_EVERY: u16 = 20;
/// Seek points an open chunk keeps (one every `SEEK_EVERY` samples after the
/// first `SEEK_EVERY`; a chunk holds at most `CHUNK_SAMPLES` in the tsdb).
const SEEKS: usize = 5;

/// A decoder's state between two samples: enough to go on decoding from
/// the middle of a chunk.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    /// Bit position of the next sample.
    bit_pos: u32,
    /// Samples decoded before this point (0 = unused seek slot).
    read: u16,
    leading: u8,
    trailing: u8,
    /// The last decoded sample's time, delta and value bits.
    t: i64,
    delta: i64,
    vb: u64,
}

impl Default for Chunk {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunk {
    pub fn new() -> Self {
        Self {
            bits: Bits::default(),
            count: 0,
            min_t: 0,
            max_t: 0,
            app: Some(Box::new(AppendState {
                delta: 0,
                value_bits: 0,
                leading: 0xff,
                trailing: 0,
                seeks: None,
            })),
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn min_t(&self) -> Option<i64> {
        (self.count > 0).then_some(self.min_t)
    }

    pub fn max_t(&self) -> Option<i64> {
        (self.count > 0).then_some(self.max_t)
    }

    /// The newest sample (from the appender state when open, else decoded).
    pub fn last(&self) -> Option<(i64, f64)> {
        if self.count == 0 {
            return None;
        }
        if let Some(app) = &self.app {
            return Some((self.max_t, f64::from_bits(app.value_bits)));
        }
        self.iter().last()
    }

    /// Encoded size in bytes (heap).
    pub fn encoded_len(&self) -> usize {
        self.bits.bytes.len()
    }

    /// Stops appending: frees the appender state and spare capacity.
    pub fn seal(&mut self) {
        self.app = None;
        self.bits.bytes.shrink_to_fit();
    }

    pub fn is_sealed(&self) -> bool {
        self.app.is_none()
    }

    /// Appends a sample; `t` must be after the newest one (callers check).
    /// Returns false (and appends nothing) on a sealed chunk or a `t` that is
    /// not after the newest sample.
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        let count = self.count;
        let max_t = self.max_t;
        let Some(app) = self.app.as_deref_mut() else {
            return false;
        };
        if count > 0 && t <= max_t {
            return false;
        }
        let vb = v.to_bits();
        match count {
            0 => {
                self.bits.push_bits(t as u64, 64);
                self.bits.push_bits(vb, 64);
                self.min_t = t;
            }
            1 => {
                let delta = t.wrapping_sub(max_t);
                write_varint(&mut self.bits, delta);
                app.delta = delta;
                write_xor(&mut self.bits, app, vb);
            }
            _ => {
                let delta = t.wrapping_sub(max_t);
                let dod = delta.wrapping_sub(app.delta);
                if dod == 0 {
                    self.bits.push_bit(false);
                } else if let Some(&(prefix, plen, bits)) =
                    DOD_BUCKETS.iter().find(|(_, _, bits)| fits(dod, *bits))
                {
                    self.bits.push_bits(prefix, plen);
                    self.bits.push_bits(dod as u64, bits);
                } else {
                    self.bits.push_bits(0b1111, 4);
                    self.bits.push_bits(dod as u64, 64);
                }
                app.delta = delta;
                write_xor(&mut self.bits, app, vb);
            }
        }
        app.value_bits = vb;
        self.max_t = t;
        self.count += 1;
        if self.count % SEEK_EVERY == 0 {
            let slot = usize::from(self.count / SEEK_EVERY) - 1;
            let seeks = app
                .seeks
                .get_or_insert_with(|| Box::new([Cursor::default(); SEEKS]));
            if let Some(seek) = seeks.get_mut(slot) {
                *seek = Cursor {
                    bit_pos: self.bits.len_bits(),
                    read: self.count,
                    // A decoder starts with a zero window; the appender's
                    // "no window yet" (0xff) only matters before the first.
                    leading: if app.leading == 0xff { 0 } else { app.leading },
                    trailing: app.trailing,
                    t,
                    delta: app.delta,
                    vb,
                };
            }
        }
        true
    }

    pub fn iter(&self) -> ChunkIter<'_> {
        self.iter_from(Cursor::default())
    }

    fn iter_from(&self, at: Cursor) -> ChunkIter<'_> {
        ChunkIter {
            r: BitReader::at(&self.bits.bytes, at.bit_pos),
            left: self.count.saturating_sub(at.read),
            read: at.read,
            t: at.t,
            delta: at.delta,
            vb: at.vb,
            leading: at.leading,
            trailing: at.trailing,
        }
    }

    /// Appends the samples with `mint <= t <= maxt` to `ts` and `vs`. The
    /// samples before `mint` are decoded too (each depends on the one
    /// before), from the chunk's start or the open chunk's last seek point.
    pub fn decode_range_into(&self, mint: i64, maxt: i64, ts: &mut Vec<i64>, vs: &mut Vec<f64>) {
        // The open chunk starts from its last seek point before `mint`.
        let start = self
            .app
            .as_deref()
            .and_then(|app| app.seeks.as_deref())
            .and_then(|seeks| seeks.iter().take_while(|s| s.read > 0 && s.t < mint).last())
            .copied()
            .unwrap_or_default();
        for (t, v) in self.iter_from(start) {
            if t > maxt {
                break;
            }
            if t >= mint {
                ts.push(t);
                vs.push(v);
            }
        }
    }

    /// The serialised form: count, min_t, max_t, byte length, bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.min_t.to_le_bytes());
        out.extend_from_slice(&self.max_t.to_le_bytes());
        out.extend_from_slice(&(self.bits.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.bits.bytes);
    }

    /// Reads a sealed chunk written by [`Chunk::encode_into`]; `None` when the
    /// input is short or does not decode to `count` ascending samples.
    pub fn decode_from(input: &mut &[u8]) -> Option<Chunk> {
        let count = u16::from_le_bytes(take::<2>(input)?);
        let min_t = i64::from_le_bytes(take::<8>(input)?);
        let max_t = i64::from_le_bytes(take::<8>(input)?);
        let len = u32::from_le_bytes(take::<4>(input)?) as usize;
        if input.len() < len {
            return None;
        }
        let (bytes, rest) = input.split_at(len);
        *input = rest;
        let chunk = Chunk {
            bits: Bits {
                bytes: bytes.to_vec(),
                used_in_last: 0,
            },
            count,
            min_t,
            max_t,
            app: None,
        };
        // Validate: every sample decodes, ascending, matching the header.
        let mut n = 0u16;
        let mut prev: Option<i64> = None;
        for (t, _) in chunk.iter() {
            if prev.is_some_and(|p| t <= p) {
                return None;
            }
            prev = Some(t);
            n += 1;
        }
        if n != count || (count > 0 && (chunk.iter().next()?.0 != min_t || prev? != max_t)) {
            return None;
        }
        Some(chunk)
    }
}

fn take<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    if input.len() < N {
        return None;
    }
    let (head, rest) = input.split_at(N);
    *input = rest;
    head.try_into().ok()
}

/// Zigzag varint for the first delta (7 bits a group, high bit = more).
fn write_varint(bits: &mut Bits, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let group = u & 0x7f;
        u >>= 7;
        if u == 0 {
            bits.push_bits(group, 8);
            return;
        }
        bits.push_bits(group | 0x80, 8);
    }
}

fn read_varint(r: &mut BitReader<'_>) -> Option<i64> {
    let mut u = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = r.bits(8)?;
        u |= (byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(((u >> 1) as i64) ^ -((u & 1) as i64));
        }
    }
    None
}

fn write_xor(bits: &mut Bits, app: &mut AppendState, vb: u64) {
    let x = vb ^ app.value_bits;
    if x == 0 {
        bits.push_bit(false);
        return;
    }
    bits.push_bit(true);
    let leading = (x.leading_zeros() as u8).min(31);
    let trailing = x.trailing_zeros() as u8;
    if app.leading != 0xff && leading >= app.leading && trailing >= app.trailing {
        // Fits in the previous window: reuse it.
        bits.push_bit(false);
        let sig = 64 - app.leading - app.trailing;
        bits.push_bits(x >> app.trailing, sig);
    } else {
        bits.push_bit(true);
        let sig = 64 - leading - trailing;
        bits.push_bits(u64::from(leading), 5);
        // 64 significant bits are written as 0 (6 bits cannot hold 64).
        bits.push_bits(u64::from(sig) & 0x3f, 6);
        bits.push_bits(x >> trailing, sig);
        app.leading = leading;
        app.trailing = trailing;
    }
}

/// Decodes a chunk's samples in time order.
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    left: u16,
    read: u16,
    t: i64,
    delta: i64,
    vb: u64,
    leading: u8,
    trailing: u8,
}

impl ChunkIter<'_> {
    #[inline(always)]
    fn next_sample(&mut self) -> Option<(i64, f64)> {
        match self.read {
            0 => {
                self.t = self.r.bits(64)? as i64;
                self.vb = self.r.bits(64)?;
            }
            1 => {
                self.delta = read_varint(&mut self.r)?;
                self.t = self.t.wrapping_add(self.delta);
                self.read_xor()?;
            }
            _ => {
                let dod = match self.r.ones_then_zero(4)? as usize {
                    0 => 0,
                    4 => self.r.bits(64)? as i64,
                    n => {
                        let bits = DOD_BUCKETS[n - 1].2;
                        let raw = self.r.bits(bits)?;
                        // Sign-extend from `bits`.
                        let shift = 64 - u32::from(bits);
                        ((raw << shift) as i64) >> shift
                    }
                };
                self.delta = self.delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.delta);
                self.read_xor()?;
            }
        }
        self.read += 1;
        Some((self.t, f64::from_bits(self.vb)))
    }

    #[inline(always)]
    fn read_xor(&mut self) -> Option<()> {
        if !self.r.bit()? {
            return Some(());
        }
        if self.r.bit()? {
            self.leading = self.r.bits(5)? as u8;
            let mut sig = self.r.bits(6)? as u8;
            if sig == 0 {
                sig = 64;
            }
            self.trailing = 64u8.checked_sub(self.leading + sig)?;
        }
        let sig = 64 - self.leading - self.trailing;
        let x = self.r.bits(sig)?;
        self.vb ^= x << self.trailing;
        Some(())
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let s = self.next_sample();
        if s.is_none() {
            self.left = 0;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(samples: &[(i64, f64)]) {
        let mut c = Chunk::new();
        for &(t, v) in samples {
            assert!(c.append(t, v));
        }
        let back: Vec<(i64, u64)> = c.iter().map(|(t, v)| (t, v.to_bits())).collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(back, want);
        assert_eq!(
            c.last().map(|(t, v)| (t, v.to_bits())),
            want.last().copied()
        );
        let mut bytes = Vec::new();
        c.seal();
        c.encode_into(&mut bytes);
        let mut input = bytes.as_slice();
        let d = Chunk::decode_from(&mut input).expect("decodes");
        assert!(input.is_empty());
        let again: Vec<(i64, u64)> = d.iter().map(|(t, v)| (t, v.to_bits())).collect();
        assert_eq!(again, want);
        assert_eq!(
            d.last().map(|(t, v)| (t, v.to_bits())),
            want.last().copied()
        );
    }

    #[test]
    fn special_values_survive_bit_exact() {
        let stale = f64::from_bits(crate::tsdb::STALE_NAN_BITS);
        round_trip(&[
            (1000, 1.0),
            (2000, stale),
            (3000, f64::NAN),
            (4000, f64::INFINITY),
            (5000, f64::NEG_INFINITY),
            (6000, -0.0),
            (7000, 0.0),
            (8000, f64::MIN_POSITIVE),
            (9000, f64::MAX),
            (10000, f64::from_bits(1)),
            (11000, stale),
            (12000, 1.0),
        ]);
    }

    #[test]
    fn timestamps_of_every_bucket_round_trip() {
        let mut t = -5_000_000_000i64;
        let mut samples = Vec::new();
        let steps = [
            1,
            1,
            2,
            1000,
            1000,
            9000,
            70_000,
            600_000,
            1 << 40,
            1,
            1 << 20,
            3,
        ];
        for (i, s) in steps.iter().enumerate() {
            t += s;
            samples.push((t, i as f64 * 0.1));
        }
        round_trip(&samples);
        round_trip(&[(i64::MIN + 1, 0.0), (0, 1.0), (i64::MAX, 2.0)]);
        round_trip(&[(7, 3.5)]);
        round_trip(&[]);
    }

    #[test]
    fn regular_series_cost_few_bytes() {
        let mut c = Chunk::new();
        for i in 0..120 {
            // 15 s interval with a little jitter; a 0/1 value.
            let t = 1_700_000_000_000 + i * 15_000 + (i % 3);
            assert!(c.append(t, if i % 40 == 0 { 0.0 } else { 1.0 }));
        }
        c.seal();
        assert!(c.encoded_len() < 2 * 120, "{} bytes", c.encoded_len());
    }

    #[test]
    fn random_values_round_trip() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut t = 0i64;
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|_| {
                t += rng.gen_range(1..100_000);
                let v = match rng.gen_range(0..4) {
                    0 => f64::from_bits(rng.gen()),
                    1 => rng.gen_range(-1e6..1e6),
                    2 => rng.gen_range(0..10) as f64,
                    _ => 42.0,
                };
                (t, v)
            })
            .collect();
        round_trip(&samples);
    }

    /// A range read of the open chunk starts from a seek point; it must
    /// return exactly what a decode from the first sample returns, for every
    /// window, with values that change the XOR window as they go.
    #[test]
    fn range_reads_from_seek_points_match_a_full_decode() {
        let mut open = Chunk::new();
        let mut samples = Vec::new();
        for i in 0..120i64 {
            let t = 1_000_000 + i * 1_000 + (i * 7) % 5;
            let v = match i % 4 {
                0 => i as f64,
                1 => (i as f64).sqrt(),
                2 => f64::from_bits(crate::tsdb::STALE_NAN_BITS),
                _ => 1e300 / (i as f64 + 1.0),
            };
            assert!(open.append(t, v));
            samples.push((t, v.to_bits()));
            let mut sealed = open.clone();
            sealed.seal();
            for &(mint, maxt) in &[
                (i64::MIN, i64::MAX),
                (t - 25_000, t),
                (t - 47_500, t - 3_000),
                (t, t),
                (t + 1, i64::MAX),
                (1_000_000 + 40_000, 1_000_000 + 40_000),
            ] {
                let want: Vec<(i64, u64)> = samples
                    .iter()
                    .copied()
                    .filter(|&(st, _)| st >= mint && st <= maxt)
                    .collect();
                for c in [&open, &sealed] {
                    let (mut ts, mut vs) = (Vec::new(), Vec::new());
                    c.decode_range_into(mint, maxt, &mut ts, &mut vs);
                    let got: Vec<(i64, u64)> =
                        ts.into_iter().zip(vs.iter().map(|v| v.to_bits())).collect();
                    assert_eq!(got, want, "{} samples, [{mint}, {maxt}]", i + 1);
                }
            }
        }
    }

    #[test]
    fn appends_out_of_order_or_to_sealed_are_refused() {
        let mut c = Chunk::new();
        assert!(c.append(10, 1.0));
        assert!(!c.append(10, 2.0));
        assert!(!c.append(5, 2.0));
        c.seal();
        assert!(!c.append(20, 2.0));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn garbage_does_not_decode_or_panic() {
        let mut c = Chunk::new();
        for i in 0..50 {
            c.append(i * 1000, i as f64);
        }
        c.seal();
        let mut bytes = Vec::new();
        c.encode_into(&mut bytes);
        for cut in 0..bytes.len() {
            let mut input = &bytes[..cut];
            assert!(Chunk::decode_from(&mut input).is_none(), "cut at {cut}");
        }
        for i in 22..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x5a;
            let mut input = flipped.as_slice();
            let _ = Chunk::decode_from(&mut input);
        }
    }
}
