//! Parallel, deterministic gzip, pigz-style.
//!
//! The input stream is cut into fixed-size chunks (by byte count, never by timing). Each chunk
//! is deflated on its own by a small pool of threads, primed with the 32 KiB of input that
//! precede it as a preset dictionary (so matches still reach across chunk boundaries), and
//! ends in a sync flush (an empty stored block, byte-aligned) except the last, which ends the
//! deflate stream. The pieces are written in order behind one gzip header, followed by the
//! combined crc32 and length: a single ordinary gzip member that `gzip -d`, `tar xzf` and
//! `flate2::read::GzDecoder` read like any other.
//!
//! The output depends only on the input bytes, the level and the chunk size: the same bytes
//! come out whatever the number of threads or the order in which the threads finish.
//!
//! Memory stays bounded: at most `2 * threads + 2` chunks are in flight (queued, being
//! compressed or waiting for their turn to be written).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// The deflate window: the dictionary handed from one chunk to the next.
const DICT: usize = 32 * 1024;
/// Smallest chunk accepted (a chunk must be able to hold a whole dictionary).
const MIN_CHUNK: usize = 64 * 1024;
/// Most compression threads used by [`Options::default`].
pub const MAX_THREADS: usize = 8;
/// Default chunk size. Measured with `scripts/bench-cook.sh` (322 MB tree, 2 cores): 256 KiB
/// to 4 MiB chunks all cook within noise of each other (±5%) and within 0.01% in size (each
/// chunk costs a sync flush and a dictionary priming); 1 MiB keeps the window of in-flight
/// chunks small (`2 * threads + 2` MiB of input) while leaving every thread a big bite.
pub const DEFAULT_CHUNK: usize = 1 << 20;

/// gzip header: deflate, no flags, mtime 0, no extra flags, OS 255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// How to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// zlib level, 0–9.
    pub level: u32,
    /// Input bytes per independently compressed chunk (at least 64 KiB). Changing it changes
    /// the compressed bytes.
    pub chunk_size: usize,
    /// Compression threads (at least 1). Does not change the compressed bytes.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            level: 6,
            chunk_size: DEFAULT_CHUNK,
            threads: default_threads(),
        }
    }
}

/// `available_parallelism`, capped at [`MAX_THREADS`].
pub fn default_threads() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_THREADS)
}

struct Job {
    index: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

struct Done {
    index: u64,
    last: bool,
    result: io::Result<(Vec<u8>, Crc)>,
}

/// A [`Write`] sink that gzip-compresses everything written to it into `W` on a pool of
/// threads. Call [`ParGzEncoder::finish`] to end the stream and get `W` back; dropping the
/// encoder without finishing abandons the output (the threads are stopped and joined).
pub struct ParGzEncoder<W: Write + Send + 'static> {
    buf: Vec<u8>,
    chunk: usize,
    next: u64,
    dict: Vec<u8>,
    jobs: Option<Sender<Job>>,
    /// One token per free slot in the in-flight window; the writer returns them.
    slots: Receiver<()>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParGzEncoder<W> {
    pub fn new(out: W, opts: Options) -> Self {
        let threads = opts.threads.max(1);
        let chunk = opts.chunk_size.max(MIN_CHUNK);
        let level = Compression::new(opts.level.min(9));
        let window = 2 * threads + 2;

        let (slot_tx, slots) = mpsc::channel();
        for _ in 0..window {
            slot_tx.send(()).expect("receiver is alive");
        }
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let workers = (0..threads)
            .map(|_| {
                let job_rx = Arc::clone(&job_rx);
                let done_tx = done_tx.clone();
                thread::spawn(move || worker(level, &job_rx, &done_tx))
            })
            .collect();
        drop(done_tx);
        let writer = thread::spawn(move || write_in_order(out, &done_rx, &slot_tx));
        ParGzEncoder {
            buf: Vec::with_capacity(chunk),
            chunk,
            next: 0,
            dict: Vec::new(),
            jobs: Some(jobs),
            slots,
            workers,
            writer: Some(writer),
        }
    }

    /// Compresses what is left, writes the trailer and returns the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(res)) => res,
            Some(Err(_)) => Err(io::Error::other("the gzip writer thread panicked")),
            None => Err(stopped()),
        }
    }

    /// Hands the buffered bytes to the pool as the next chunk.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if self.jobs.is_none() || self.slots.recv().is_err() {
            return Err(self.fail());
        }
        let cap = if last { 0 } else { self.chunk };
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(cap));
        let next_dict = if last {
            Vec::new()
        } else {
            data[data.len().saturating_sub(DICT)..].to_vec()
        };
        let job = Job {
            index: self.next,
            data,
            dict: std::mem::replace(&mut self.dict, next_dict),
            last,
        };
        self.next += 1;
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok());
        if sent != Some(true) {
            return Err(self.fail());
        }
        Ok(())
    }

    /// Stops the pipeline and returns the error that stopped it.
    fn fail(&mut self) -> io::Error {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the gzip writer thread panicked"),
            _ => stopped(),
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the gzip compression pipeline stopped")
}

impl<W: Write + Send + 'static> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.jobs.is_none() {
            return Err(stopped());
        }
        let n = (self.chunk - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    /// A no-op: chunk boundaries depend on the byte count only, so a flush cannot cut one.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParGzEncoder<W> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn worker(level: Compression, jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let result = catch_unwind(AssertUnwindSafe(|| deflate_chunk(level, &job)))
            .unwrap_or_else(|_| Err(io::Error::other("deflate panicked")));
        let failed = result.is_err();
        let sent = done.send(Done {
            index: job.index,
            last: job.last,
            result,
        });
        if sent.is_err() || failed {
            return;
        }
    }
}

/// Raw deflate of one chunk: primed with `dict`, ending in a sync flush (or the final block).
///
/// A fresh compressor every time: `Compress::reset` does not clear the window (zlib-rs
/// 0.6), and a reused compressor's output was seen to depend on the chunk it compressed
/// before, i.e. on the thread count (`no_state_leaks_between_chunks` catches that). A new
/// one starts from zeroed memory; the allocation costs little next to deflating a chunk.
fn deflate_chunk(level: Compression, job: &Job) -> io::Result<(Vec<u8>, Crc)> {
    let mut crc = Crc::new();
    crc.update(&job.data);
    let mut comp = Compress::new(level, false);
    if !job.dict.is_empty() {
        comp.set_dictionary(&job.dict).map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let data = &job.data;
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1024);
    let start = comp.total_in();
    loop {
        let used = (comp.total_in() - start) as usize;
        let status = comp
            .compress_vec(&data[used..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = (comp.total_in() - start) as usize == data.len();
        let done = if job.last {
            status == Status::StreamEnd
        } else {
            // zlib's rule: a flush is complete when it returns with output space to spare.
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok((out, crc));
        }
        out.reserve(64 * 1024);
    }
}

/// Writes the header, the chunks in index order as they arrive, then the trailer. Returns a
/// window slot for every chunk written.
fn write_in_order<W: Write>(
    mut out: W,
    done: &Receiver<Done>,
    slots: &Sender<()>,
) -> io::Result<W> {
    out.write_all(&HEADER)?;
    let mut crc = Crc::new();
    let mut next = 0u64;
    let mut pending = BTreeMap::new();
    loop {
        let d = done.recv().map_err(|_| stopped())?;
        pending.insert(d.index, d);
        while let Some(d) = pending.remove(&next) {
            let (bytes, chunk_crc) = d.result?;
            out.write_all(&bytes)?;
            crc.combine(&chunk_crc);
            next += 1;
            if d.last {
                out.write_all(&crc.sum().to_le_bytes())?;
                out.write_all(&crc.amount().to_le_bytes())?;
                out.flush()?;
                return Ok(out);
            }
            let _ = slots.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Deterministic pseudo-random bytes, half of them text-like.
    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let words: [&[u8]; 6] = [b"fn ", b"let ", b"return ", b"{\n", b"}\n", b"self."];
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (v.len() / 100_000) % 2 == 0 {
                v.extend_from_slice(words[(x % 6) as usize]);
            } else {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(len);
        v
    }

    fn gz(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut e = ParGzEncoder::new(
            Vec::new(),
            Options {
                level: 6,
                chunk_size: chunk,
                threads,
            },
        );
        // Odd write sizes, so chunking cannot depend on how the caller splits its writes.
        for piece in data.chunks(12_345) {
            e.write_all(piece).unwrap();
        }
        e.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn round_trips_and_is_thread_count_independent() {
        for len in [0, 1, 65_535, 65_536, 65_537, 3 * 65_536, 1_000_003] {
            let data = sample(len);
            let one = gz(&data, 1, MIN_CHUNK);
            assert_eq!(gunzip(&one), data, "len {len}");
            assert_eq!(&one[..10], &HEADER);
            for threads in [2, 3, 8] {
                assert_eq!(
                    gz(&data, threads, MIN_CHUNK),
                    one,
                    "len {len} threads {threads}"
                );
            }
        }
    }

    /// Text and noise mixed at irregular offsets, so chunk ends fall on every kind of data.
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words: [&[u8]; 5] = [b"const ", b"x = ", b"require('", b"');\n", b"  "];
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let end = v.len() + 1 + (next() % 40_000) as usize;
            let text = next() % 2 == 0;
            while v.len() < end {
                if text {
                    v.extend_from_slice(words[(next() % 5) as usize]);
                } else {
                    v.extend_from_slice(&next().to_le_bytes());
                }
            }
        }
        v.truncate(len);
        v
    }

    #[test]
    fn no_state_leaks_between_chunks() {
        for seed in 1..40 {
            let data = mixed(1 << 20, seed);
            let one = gz(&data, 1, MIN_CHUNK);
            assert_eq!(gunzip(&one), data);
            assert_eq!(gz(&data, 3, MIN_CHUNK), one, "seed {seed}");
        }
    }

    #[test]
    fn close_to_single_stream_size() {
        let data = sample(4 << 20);
        let par = gz(&data, 2, DEFAULT_CHUNK);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        e.write_all(&data).unwrap();
        let single = e.finish().unwrap();
        assert_eq!(gunzip(&par), data);
        assert!(
            (par.len() as f64) < single.len() as f64 * 1.01,
            "{} vs {}",
            par.len(),
            single.len()
        );
    }

    #[test]
    fn a_failing_output_is_an_error_not_a_hang() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 < b.len() {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
                }
                self.0 -= b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = sample(8 << 20);
        let mut e = ParGzEncoder::new(
            Full(100_000),
            Options {
                level: 1,
                chunk_size: MIN_CHUNK,
                threads: 2,
            },
        );
        let err = data
            .chunks(1 << 16)
            .try_for_each(|c| e.write_all(c))
            .and_then(|()| e.finish().map(drop))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
    }
}
