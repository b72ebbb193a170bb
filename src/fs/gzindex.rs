//! Seek points in a gzip stream, so that a layer blob can be read from the
//! middle: the zran technique (Mark Adler's `zran.c`, SOCI's zTOC).
//!
//! Deflate has no random access: every byte may refer to the 32 KiB
//! before it. But at a block boundary the decoder's whole state is the
//! position in the compressed stream (to the bit) and the last 32 KiB of
//! output. [`IndexingReader`] inflates a gzip stream as any reader would
//! and records such a [`Checkpoint`] every [`SPAN`] bytes of output;
//! [`inflate_from`] later starts a fresh decoder at one of them, given the
//! compressed bytes from there on, and produces the output that follows.
//!
//! Concatenated gzip members (what `pigz --independent` or `cat a.gz b.gz`
//! make) are one stream: each member's header is read in turn, and a
//! checkpoint at a member's start needs no window.
//!
//! The binding is zlib's C API as `libz-rs-sys` offers it (the same
//! zlib-rs that `flate2` runs on here): only it exposes `Z_BLOCK`,
//! `data_type` and `inflatePrime`, which seeking needs. Nothing unsafe
//! leaves this file.

use std::io::{self, Read};

use libz_rs_sys as z;

/// Output bytes between checkpoints: a read from the middle of a layer
/// inflates at most this much (plus a block) it does not want. SOCI's
/// default; the index costs ~32 KiB of window per span (less compressed).
pub const SPAN: u64 = 4 << 20;

/// Deflate's window: how far back a block may refer.
pub const WINDOW: usize = 32 << 10;

/// Where a decoder can start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Offset in the uncompressed stream.
    pub out: u64,
    /// Offset in the compressed stream of the first whole byte to read.
    pub input: u64,
    /// Bits of the byte before `input` that belong to the next block
    /// (0..=7, its high bits).
    pub bits: u8,
    /// The output's last bytes before `out` (up to [`WINDOW`]); empty at
    /// the start of a gzip member, where a header is read first.
    pub window: Vec<u8>,
}

impl Checkpoint {
    /// A gzip member starts here: no window, a header to read.
    pub fn member_start(out: u64, input: u64) -> Self {
        Checkpoint {
            out,
            input,
            bits: 0,
            window: Vec::new(),
        }
    }

    fn at_member_start(&self) -> bool {
        self.bits == 0 && self.window.is_empty()
    }

    /// The first compressed byte [`inflate_from`] needs.
    pub fn first_byte(&self) -> u64 {
        self.input - u64::from(self.bits > 0)
    }
}

/// zlib's `windowBits` for a gzip header and for raw deflate.
const GZIP: i32 = 15 + 16;
const RAW: i32 = -15;

/// One zlib inflate stream. Boxed: zlib's state points back at it.
struct Inflater {
    strm: Box<z::z_stream>,
}

// SAFETY: the stream owns its state and is used from one thread at a time.
unsafe impl Send for Inflater {}

/// What one call of `inflate` did.
struct Step {
    consumed: usize,
    produced: usize,
    /// `Z_STREAM_END`: a gzip member (or raw deflate stream) ended.
    end: bool,
}

impl Inflater {
    fn new(window_bits: i32) -> io::Result<Self> {
        let mut strm = Box::new(z::z_stream::default());
        // SAFETY: a default stream (allocators unset: zlib-rs picks its
        // own), the version and size of the struct this crate declares.
        let rc = unsafe {
            z::inflateInit2_(
                &mut *strm,
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        check(rc, "starting a decoder")?;
        Ok(Inflater { strm })
    }

    /// Starts a new gzip member (after the end of the last one).
    fn restart_as_gzip(&mut self) -> io::Result<()> {
        // SAFETY: an initialised stream.
        check(unsafe { z::inflateReset2(&mut *self.strm, GZIP) }, "restarting")
    }

    fn prime(&mut self, bits: u8, value: u8) -> io::Result<()> {
        let v = i32::from(value) >> (8 - bits);
        // SAFETY: an initialised raw stream before its first inflate.
        check(
            unsafe { z::inflatePrime(&mut *self.strm, i32::from(bits), v) },
            "priming",
        )
    }

    fn set_dictionary(&mut self, dict: &[u8]) -> io::Result<()> {
        // SAFETY: `dict` is valid for its length, which fits a c_uint.
        let rc = unsafe { z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), dict.len() as u32) };
        check(rc, "setting the window")
    }

    /// Inflates from `input` into `output`; `block` stops at the next
    /// block boundary (`Z_BLOCK`).
    fn step(&mut self, input: &[u8], output: &mut [u8], block: bool) -> io::Result<Step> {
        let (avail_in, avail_out) = (
            input.len().min(u32::MAX as usize),
            output.len().min(u32::MAX as usize),
        );
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in as u32;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out as u32;
        let flush = if block { z::Z_BLOCK } else { z::Z_NO_FLUSH };
        // SAFETY: next_in/next_out point into live slices of the lengths
        // given; the stream is initialised.
        let rc = unsafe { z::inflate(&mut *self.strm, flush) };
        let consumed = avail_in - self.strm.avail_in as usize;
        let produced = avail_out - self.strm.avail_out as usize;
        self.strm.next_in = std::ptr::null();
        self.strm.next_out = std::ptr::null_mut();
        match rc {
            z::Z_OK | z::Z_BUF_ERROR => Ok(Step {
                consumed,
                produced,
                end: false,
            }),
            z::Z_STREAM_END => Ok(Step {
                consumed,
                produced,
                end: true,
            }),
            rc => Err(invalid(format!("corrupt deflate stream ({})", code_name(rc)))),
        }
    }

    /// At a block boundary that a decoder can start from: the end of a
    /// block that is not the stream's last.
    fn at_boundary(&self) -> bool {
        self.strm.data_type & 128 != 0 && self.strm.data_type & 64 == 0
    }

    /// Bits taken from the input but not used yet (zlib keeps fewer than
    /// 8; zlib-rs's wider bit buffer may hold whole bytes too).
    fn pending_bits(&self) -> u64 {
        (self.strm.data_type & 63) as u64
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: an initialised stream, ended once.
        unsafe { z::inflateEnd(&mut *self.strm) };
    }
}

fn check(rc: i32, what: &str) -> io::Result<()> {
    if rc == z::Z_OK {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "gzip: {what} failed ({})",
            code_name(rc)
        )))
    }
}

fn code_name(rc: i32) -> &'static str {
    match rc {
        z::Z_DATA_ERROR => "invalid data",
        z::Z_MEM_ERROR => "out of memory",
        z::Z_STREAM_ERROR => "inconsistent state",
        z::Z_NEED_DICT => "a dictionary is needed",
        _ => "zlib error",
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Compressed bytes read from the inner reader at a time.
const IN_BUF: usize = 256 << 10;
/// Output buffer: the window kept behind what the caller has read, and
/// room to inflate into.
const OUT_BUF: usize = WINDOW + (256 << 10);

/// Compressed input read ahead from a reader, for a decoder.
struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    done: bool,
}

impl<R: Read> Input<R> {
    fn new(inner: R, size: usize) -> Self {
        Input {
            inner,
            buf: vec![0u8; size].into_boxed_slice(),
            pos: 0,
            len: 0,
            done: false,
        }
    }

    /// Some input available; false at its end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.done {
            return Ok(false);
        }
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    return Ok(false);
                }
                Ok(n) => {
                    (self.pos, self.len) = (0, n);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Inflates a gzip stream (one or more members) and records a
/// [`Checkpoint`] at the first block boundary after every `span` bytes of
/// output.
pub struct IndexingReader<R> {
    input: Input<R>,
    inflater: Inflater,
    span: u64,
    /// Compressed bytes consumed by the decoder.
    in_total: u64,
    output: Box<[u8]>,
    /// What the caller has not read yet: `output[out_pos..out_len]`; the
    /// bytes before `out_pos` are history (the window).
    out_pos: usize,
    out_len: usize,
    out_total: u64,
    /// A member ended; the next one (if any input is left) starts anew.
    between_members: bool,
    finished: bool,
    checkpoints: Vec<Checkpoint>,
    /// BLAKE2b-256 of the output from each checkpoint to the next (the
    /// last one's once the stream ends): what a decoder started there
    /// must produce.
    hashes: Vec<[u8; 32]>,
    hasher: blake2b_simd::State,
    hashing: bool,
}

fn hasher() -> blake2b_simd::State {
    blake2b_simd::Params::new().hash_length(32).to_state()
}

fn finish(state: &blake2b_simd::State) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(state.finalize().as_bytes());
    out
}

/// The BLAKE2b-256 a decoded interval is checked against.
pub fn interval_hash(data: &[u8]) -> [u8; 32] {
    let mut state = hasher();
    state.update(data);
    finish(&state)
}

impl<R: Read> IndexingReader<R> {
    pub fn new(inner: R, span: u64) -> io::Result<Self> {
        Ok(IndexingReader {
            input: Input::new(inner, IN_BUF),
            inflater: Inflater::new(GZIP)?,
            span: span.max(WINDOW as u64),
            in_total: 0,
            output: vec![0u8; OUT_BUF].into_boxed_slice(),
            out_pos: 0,
            out_len: 0,
            out_total: 0,
            between_members: false,
            finished: false,
            checkpoints: vec![Checkpoint::member_start(0, 0)],
            hashes: Vec::new(),
            hasher: hasher(),
            hashing: true,
        })
    }

    /// The same without the intervals' hashes (they cost a BLAKE2b pass
    /// over the output), for a reader that only wants to seek.
    pub fn without_hashes(mut self) -> Self {
        self.hashing = false;
        self
    }

    /// Bytes of output so far.
    pub fn position(&self) -> u64 {
        self.out_total - (self.out_len - self.out_pos) as u64
    }

    /// The checkpoints recorded so far (all of them once the stream was
    /// read to its end); the first is the stream's start.
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    /// Compressed bytes read: the blob's size once read to its end.
    pub fn compressed_len(&self) -> u64 {
        self.in_total
    }

    /// The uncompressed length, once read to its end.
    pub fn uncompressed_len(&self) -> u64 {
        self.out_total
    }

    /// The checkpoints and the hash of each one's interval, once the
    /// stream was read to its end.
    pub fn into_checkpoints(self) -> (Vec<Checkpoint>, Vec<[u8; 32]>) {
        let mut hashes = self.hashes;
        if self.finished {
            hashes.push(finish(&self.hasher));
        }
        (self.checkpoints, hashes)
    }

    fn push_checkpoint(&mut self, c: Checkpoint) {
        self.hashes.push(finish(&self.hasher));
        self.hasher = hasher();
        self.checkpoints.push(c);
    }

    /// Keeps the last WINDOW bytes of output and makes room after them.
    fn make_room(&mut self) {
        if self.output.len() - self.out_len >= WINDOW {
            return;
        }
        let keep_from = self.out_len.saturating_sub(WINDOW).min(self.out_pos);
        self.output.copy_within(keep_from..self.out_len, 0);
        self.out_pos -= keep_from;
        self.out_len -= keep_from;
    }

    /// The window before the current output position.
    fn window(&self) -> Vec<u8> {
        self.output[self.out_len.saturating_sub(WINDOW)..self.out_len].to_vec()
    }

    fn last_checkpoint_out(&self) -> u64 {
        self.checkpoints.last().map_or(0, |c| c.out)
    }

    /// Decodes more output; false at the end of the stream.
    fn decode(&mut self) -> io::Result<bool> {
        loop {
            if self.finished {
                return Ok(false);
            }
            let has_input = self.input.fill()?;
            if self.between_members {
                if !has_input {
                    self.finished = true;
                    return Ok(false);
                }
                self.between_members = false;
                self.inflater.restart_as_gzip()?;
                if self.out_total - self.last_checkpoint_out() >= self.span {
                    self.push_checkpoint(Checkpoint::member_start(self.out_total, self.in_total));
                }
            }
            self.make_room();
            let step = {
                let input = self.input.available();
                let output = &mut self.output[self.out_len..];
                self.inflater.step(input, output, true)?
            };
            self.input.consume(step.consumed);
            self.in_total += step.consumed as u64;
            if self.hashing {
                self.hasher
                    .update(&self.output[self.out_len..self.out_len + step.produced]);
            }
            self.out_len += step.produced;
            self.out_total += step.produced as u64;
            if step.end {
                self.between_members = true;
            } else if self.inflater.at_boundary() && self.out_total - self.last_checkpoint_out() >= self.span
            {
                // Whole unused bytes are input still to read; the rest are
                // the high bits of the byte before.
                let pending = self.inflater.pending_bits();
                let c = Checkpoint {
                    out: self.out_total,
                    input: self.in_total - pending / 8,
                    bits: (pending % 8) as u8,
                    window: self.window(),
                };
                self.push_checkpoint(c);
            } else if step.consumed == 0 && step.produced == 0 && !has_input {
                return Err(invalid("the gzip stream is truncated".into()));
            }
            if step.produced > 0 {
                return Ok(true);
            }
        }
    }
}

impl<R: Read> Read for IndexingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.out_pos == self.out_len {
            if !self.decode()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out_len - self.out_pos);
        buf[..n].copy_from_slice(&self.output[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// A decoder started at a checkpoint: reads the output from there on,
/// given a reader of the compressed stream from
/// [`Checkpoint::first_byte`] on. Further gzip members are read in turn.
pub struct Resumed<R> {
    input: Input<R>,
    inflater: Inflater,
    /// Raw deflate (a mid-member checkpoint) until the member ends.
    raw: bool,
    /// The member ended: its trailer (after raw deflate) and the next
    /// member's header come next.
    member_ended: bool,
    finished: bool,
}

impl<R: Read> Resumed<R> {
    pub fn new(at: &Checkpoint, mut inner: R) -> io::Result<Self> {
        let raw = !at.at_member_start();
        let inflater = if raw {
            let mut inf = Inflater::new(RAW)?;
            if at.bits > 0 {
                let mut first = [0u8; 1];
                inner
                    .read_exact(&mut first)
                    .map_err(|_| invalid("no compressed bytes at the checkpoint".into()))?;
                inf.prime(at.bits, first[0])?;
            }
            inf.set_dictionary(&at.window)?;
            inf
        } else {
            Inflater::new(GZIP)?
        };
        Ok(Resumed {
            input: Input::new(inner, 64 << 10),
            inflater,
            raw,
            member_ended: false,
            finished: false,
        })
    }

    /// Skips the 8-byte trailer a raw decoder leaves in the input.
    fn skip_trailer(&mut self) -> io::Result<()> {
        let mut left = 8;
        while left > 0 {
            if !self.input.fill()? {
                return Err(invalid("the gzip stream ends inside a trailer".into()));
            }
            let n = left.min(self.input.available().len());
            self.input.consume(n);
            left -= n;
        }
        Ok(())
    }
}

impl<R: Read> Read for Resumed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.finished {
                return Ok(0);
            }
            if self.member_ended {
                if self.raw {
                    self.skip_trailer()?;
                    self.raw = false;
                }
                if !self.input.fill()? {
                    self.finished = true;
                    return Ok(0);
                }
                self.inflater.restart_as_gzip()?;
                self.member_ended = false;
            }
            let has_input = self.input.fill()?;
            let step = self.inflater.step(self.input.available(), buf, false)?;
            self.input.consume(step.consumed);
            self.member_ended = step.end;
            if step.produced > 0 {
                return Ok(step.produced);
            }
            if !step.end && step.consumed == 0 && !has_input {
                return Err(invalid("the compressed bytes end before the output does".into()));
            }
        }
    }
}

/// Inflates `want` bytes of output starting `skip` bytes after the
/// checkpoint `at`, from `compressed`: the stream's bytes from
/// [`Checkpoint::first_byte`] on (at least up to where that output ends).
/// An error when the bytes do not decode or end too soon.
pub fn inflate_from(at: &Checkpoint, compressed: &[u8], skip: u64, want: usize) -> io::Result<Vec<u8>> {
    let mut reader = Resumed::new(at, compressed)?;
    io::copy(&mut (&mut reader).take(skip), &mut io::sink())?;
    let mut out = vec![0u8; want];
    reader.read_exact(&mut out).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid("the gzip stream ends before the span does".into()),
        _ => e,
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// Text-like data that compresses (back-references across blocks)
    /// with stretches that do not.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x = seed | 1;
        let words: [&[u8]; 6] = [b"layer ", b"chunk ", b"inode ", b"flmount ", b"\n", b"gzip "];
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(17) {
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                out.extend_from_slice(words[(x % 6) as usize]);
            }
        }
        out.truncate(len);
        out
    }

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn index(gz: &[u8], span: u64) -> (Vec<u8>, Vec<Checkpoint>) {
        let mut r = IndexingReader::new(gz, span).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.compressed_len(), gz.len() as u64);
        assert_eq!(r.uncompressed_len(), out.len() as u64);
        let (cps, hashes) = r.into_checkpoints();
        assert_eq!(cps.len(), hashes.len());
        for (i, c) in cps.iter().enumerate() {
            let end = cps.get(i + 1).map_or(out.len(), |n| n.out as usize);
            assert_eq!(interval_hash(&out[c.out as usize..end]), hashes[i]);
        }
        (out, cps)
    }

    /// Output `[offset, offset + len)` from the checkpoint before it.
    fn read_at(gz: &[u8], cps: &[Checkpoint], offset: u64, len: usize) -> Vec<u8> {
        let at = cps.iter().rev().find(|c| c.out <= offset).unwrap();
        inflate_from(at, &gz[at.first_byte() as usize..], offset - at.out, len).unwrap()
    }

    #[test]
    fn every_checkpoint_resumes_to_the_same_bytes() {
        let data = sample(9 << 20, 7);
        for level in [1, 6, 9] {
            let gz = gzip(&data, level);
            let (out, cps) = index(&gz, 1 << 20);
            assert_eq!(out, data);
            // Level 1 (zlib-ng's "quick" strategy) writes blocks of
            // megabytes: fewer places to start from, but still some.
            let expected = if level == 1 { 2 } else { 8 };
            assert!(cps.len() >= expected, "level {level}: {} checkpoints", cps.len());
            if level > 1 {
                assert!(
                    cps.iter().any(|c| c.bits != 0),
                    "some boundaries fall inside a byte"
                );
            }
            for w in cps.windows(2) {
                assert!(w[1].out - w[0].out >= 1 << 20);
            }
            for c in &cps {
                let len = (data.len() as u64 - c.out).min(100_000) as usize;
                assert_eq!(read_at(&gz, &cps, c.out, len), &data[c.out as usize..][..len]);
            }
            // Spans that start between checkpoints and cross them.
            for &(off, len) in &[
                (1u64, 10usize),
                (3_000_000, 2 << 20),
                (8 << 20, 1 << 20),
                (5_555_555, 1),
            ] {
                let end = (off as usize + len).min(data.len());
                assert_eq!(
                    read_at(&gz, &cps, off, end - off as usize),
                    &data[off as usize..end]
                );
            }
        }
    }

    #[test]
    fn concatenated_members_and_incompressible_data() {
        let a = sample(3 << 20, 1);
        let mut b = Vec::new();
        let mut x = 99u64;
        while b.len() < (2 << 20) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b.extend_from_slice(&x.to_le_bytes());
        }
        let c = sample(1 << 20, 3);
        let gz: Vec<u8> = [gzip(&a, 6), gzip(&b, 6), gzip(&[], 6), gzip(&c, 1)].concat();
        let data = [a, b, c].concat();
        let (out, cps) = index(&gz, 512 << 10);
        assert_eq!(out, data);
        for c in &cps {
            let len = (data.len() as u64 - c.out).min(1 << 20) as usize;
            assert_eq!(read_at(&gz, &cps, c.out, len), &data[c.out as usize..][..len]);
        }
        // Across member boundaries, from a mid-member checkpoint.
        let whole = read_at(&gz, &cps, 1 << 20, data.len() - (1 << 20));
        assert_eq!(whole, &data[1 << 20..]);
    }

    #[test]
    fn damage_is_an_error_not_output() {
        let data = sample(2 << 20, 5);
        let gz = gzip(&data, 6);
        let (_, cps) = index(&gz, 256 << 10);
        let at = &cps[2];
        let start = at.first_byte() as usize;
        // Cut short: an error.
        assert!(inflate_from(at, &gz[start..start + 100], 0, 1 << 20).is_err());
        // A truncated stream is an error for the indexing reader too.
        let mut r = IndexingReader::new(&gz[..gz.len() / 2], SPAN).unwrap();
        assert!(std::io::copy(&mut r, &mut std::io::sink()).is_err());
        // Not gzip at all.
        let mut r = IndexingReader::new(&b"plain text, not gzip"[..], SPAN).unwrap();
        assert!(std::io::copy(&mut r, &mut std::io::sink()).is_err());
    }
}
