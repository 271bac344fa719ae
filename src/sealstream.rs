//! Streaming authenticated encryption for files too large to hold in memory (service
//! backups): XChaCha20-Poly1305 in the STREAM construction (Hoang, Reyhanitabar, Rogaway,
//! Vizár 2015; the same nonce layout as `aead::stream::StreamBE32`).
//!
//! The file is a header, then chunks:
//!
//! ```text
//! header  = MAGIC (8) || nonce prefix (19, random) || chunk size (u32 BE)
//! chunk i = XChaCha20-Poly1305(key, nonce = prefix || i as u32 BE || last, aad = header, pt)
//! ```
//!
//! Every chunk but the last holds exactly `chunk size` bytes of plaintext; the last holds
//! fewer (possibly none) and is sealed with `last = 1`. So a reader knows a chunk is the
//! last by its length, and:
//! - a changed byte anywhere fails that chunk's tag (the header is every chunk's `aad`);
//! - swapped or repeated chunks fail (the counter is in the nonce);
//! - a file cut at a chunk boundary ends on a chunk not sealed as the last: refused;
//!   cut inside a chunk, that short chunk fails as a last one; bytes appended make the last
//!   chunk longer, which fails its tag.
//!
//! Plaintext is only handed out after its chunk's tag checked, but a consumer still sees
//! the chunks before a bad one: whoever restores from a [`OpenReader`] must treat its data as
//! tentative until the reader reached its end without error (or check the file first with
//! [`verify`]).

use std::io::{self, Read, Write};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The file's first bytes; the digit is the format's version.
pub const MAGIC: &[u8; 8] = b"MGSEAL1\n";
const PREFIX_LEN: usize = 19;
pub const HEADER_LEN: usize = MAGIC.len() + PREFIX_LEN + 4;
const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk: large enough that the tag and a call per chunk cost nothing,
/// small enough to stay in cache.
pub const CHUNK: usize = 64 * 1024;
/// What a reader accepts from a header (a hostile file must not make it allocate much).
const MAX_CHUNK: usize = 16 * 1024 * 1024;

/// A 32-byte key for sealed streams (see `secrets::Sealer::stream_key`).
#[derive(Clone)]
pub struct StreamKey(pub [u8; 32]);

fn tampered(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// The nonce of chunk `i`: the header's prefix, the counter, the last-chunk flag.
fn nonce(prefix: &[u8; PREFIX_LEN], i: u32, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&i.to_be_bytes());
    n[23] = last as u8;
    XNonce::from(n)
}

/// Seals what is written to it into `out`. [`SealWriter::finish`] writes the last chunk:
/// a writer dropped without it leaves a stream every reader refuses as truncated.
pub struct SealWriter<W: Write> {
    cipher: XChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    prefix: [u8; PREFIX_LEN],
    chunk: usize,
    counter: u32,
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> SealWriter<W> {
    pub fn new(key: &StreamKey, out: W) -> io::Result<SealWriter<W>> {
        Self::with_chunk_size(key, out, CHUNK)
    }

    /// A stream of `chunk`-byte chunks (1 to 16 MiB; readers take the size from the
    /// header): what tests and fuzzing use to make small streams of many chunks.
    pub fn with_chunk_size(key: &StreamKey, mut out: W, chunk: usize) -> io::Result<SealWriter<W>> {
        if chunk == 0 || chunk > MAX_CHUNK {
            return Err(io::Error::other("bad chunk size"));
        }
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&crate::keys::random_bytes(PREFIX_LEN));
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..8 + PREFIX_LEN].copy_from_slice(&prefix);
        header[8 + PREFIX_LEN..].copy_from_slice(&(chunk as u32).to_be_bytes());
        out.write_all(&header)?;
        Ok(SealWriter {
            cipher: XChaCha20Poly1305::new((&key.0).into()),
            header,
            prefix,
            chunk,
            counter: 0,
            buf: Vec::with_capacity(chunk + TAG_LEN),
            out,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let n = nonce(&self.prefix, self.counter, last);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&n, &self.header, &mut self.buf)
            .map_err(|_| io::Error::other("chunk too large to seal"))?;
        self.buf.extend_from_slice(&tag);
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("sealed stream too long (2^32 chunks)"))?;
        Ok(())
    }

    /// Seals the rest as the last chunk, flushes and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_chunk(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full chunk is sealed as soon as it is full, as one that is not the last: the
        // last is always shorter than a chunk (empty if the data ends on a boundary).
        let room = self.chunk - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.seal_chunk(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Opens a sealed stream: reads give the plaintext of each chunk once its tag checked;
/// anything wrong (another key, a changed byte, chunks cut off, swapped or appended) is an
/// `InvalidData` error.
pub struct OpenReader<R: Read> {
    cipher: XChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    prefix: [u8; PREFIX_LEN],
    chunk: usize,
    counter: u32,
    input: R,
    /// The current chunk's plaintext and how much of it was handed out.
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> OpenReader<R> {
    pub fn new(key: &StreamKey, mut input: R) -> io::Result<OpenReader<R>> {
        let mut header = [0u8; HEADER_LEN];
        if read_full(&mut input, &mut header)? < HEADER_LEN || &header[..8] != MAGIC {
            return Err(tampered("not a sealed backup (bad header)"));
        }
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&header[8..8 + PREFIX_LEN]);
        let chunk = u32::from_be_bytes(header[8 + PREFIX_LEN..].try_into().unwrap()) as usize;
        if chunk == 0 || chunk > MAX_CHUNK {
            return Err(tampered("not a sealed backup (bad chunk size)"));
        }
        Ok(OpenReader {
            cipher: XChaCha20Poly1305::new((&key.0).into()),
            header,
            prefix,
            chunk,
            counter: 0,
            input,
            plain: Vec::with_capacity(chunk + TAG_LEN),
            pos: 0,
            done: false,
        })
    }

    /// Reads and opens the next chunk into `plain`.
    fn next_chunk(&mut self) -> io::Result<()> {
        self.plain.resize(self.chunk + TAG_LEN, 0);
        let n = read_full(&mut self.input, &mut self.plain)?;
        if n < TAG_LEN {
            return Err(tampered(if n == 0 {
                "sealed backup truncated (its last chunk is missing)"
            } else {
                "sealed backup truncated or damaged"
            }));
        }
        self.plain.truncate(n);
        // A full chunk is never the last one (see SealWriter::write).
        let last = n < self.chunk + TAG_LEN;
        let (body, tag) = self.plain.split_at_mut(n - TAG_LEN);
        let tag = chacha20poly1305::Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(
                &nonce(&self.prefix, self.counter, last),
                &self.header,
                body,
                &tag,
            )
            .map_err(|_| tampered("sealed backup damaged or not ours (a chunk fails its check)"))?;
        self.plain.truncate(n - TAG_LEN);
        self.pos = 0;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| tampered("sealed backup too long"))?;
        // A short read means the input ended (read_full), so nothing follows the last
        // chunk: bytes appended to a stream make its last chunk longer and fail its tag.
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Opens a whole sealed stream without keeping the plaintext: its length and sha256.
pub fn verify(key: &StreamKey, input: impl Read) -> io::Result<(u64, [u8; 32])> {
    use sha2::{Digest, Sha256};
    let mut r = OpenReader::new(key, input)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((total, h.finalize().into()));
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> StreamKey {
        StreamKey([b; 32])
    }

    fn seal(k: &StreamKey, data: &[u8]) -> Vec<u8> {
        let mut w = SealWriter::new(k, Vec::new()).unwrap();
        // Odd write sizes: chunking must not depend on how the data arrives.
        for part in data.chunks(7777) {
            w.write_all(part).unwrap();
        }
        w.finish().unwrap()
    }

    fn open(k: &StreamKey, sealed: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        OpenReader::new(k, sealed)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn chunk_at(i: usize) -> std::ops::Range<usize> {
        let s = HEADER_LEN + i * (CHUNK + TAG_LEN);
        s..s + CHUNK + TAG_LEN
    }

    #[test]
    fn round_trips_at_every_boundary() {
        let k = key(1);
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let d = data(n);
            let s = seal(&k, &d);
            // Full chunks, then a last one always shorter than CHUNK (an empty one when
            // the data ends on a boundary).
            assert_eq!(s.len(), HEADER_LEN + n + (n / CHUNK + 1) * TAG_LEN, "n={n}");
            assert_eq!(open(&k, &s).unwrap(), d, "n={n}");
            let (len, digest) = verify(&k, &s[..]).unwrap();
            assert_eq!(len, n as u64);
            use sha2::Digest;
            assert_eq!(digest, <[u8; 32]>::from(sha2::Sha256::digest(&d)));
        }
    }

    #[test]
    fn the_plaintext_does_not_show_and_two_seals_differ() {
        let k = key(2);
        let d = b"secret rows secret rows secret rows".repeat(100);
        let (a, b) = (seal(&k, &d), seal(&k, &d));
        assert!(!a.windows(11).any(|w| w == b"secret rows"));
        assert_ne!(a, b, "a fresh nonce prefix each time");
    }

    #[test]
    fn another_key_is_refused() {
        let s = seal(&key(3), &data(1000));
        let e = open(&key(4), &s).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let k = key(5);
        let s = seal(&k, &data(2 * CHUNK + 100));
        // Header, first chunk, a middle tag, the last chunk.
        for at in [
            0,
            8,
            20,
            HEADER_LEN - 1,
            HEADER_LEN,
            HEADER_LEN + CHUNK + 3,
            s.len() - 1,
        ] {
            let mut bad = s.clone();
            bad[at] ^= 0x01;
            let e = open(&k, &bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "byte {at}");
        }
    }

    #[test]
    fn truncation_is_refused_at_and_between_boundaries() {
        let k = key(6);
        let s = seal(&k, &data(3 * CHUNK + 10));
        for cut in [
            0,
            HEADER_LEN - 1,
            HEADER_LEN,
            chunk_at(1).start,
            chunk_at(2).start,
            chunk_at(3).start,
            chunk_at(2).start + 100,
            s.len() - 1,
        ] {
            let e = open(&k, &s[..cut]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "cut at {cut}");
        }
        // Cut right after the full chunks: the stream "ends" on a chunk not sealed last.
        let e = open(&k, &s[..chunk_at(3).start]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn reordered_repeated_or_appended_chunks_are_refused() {
        let k = key(7);
        let s = seal(&k, &data(3 * CHUNK + 10));
        let (c0, c1) = (s[chunk_at(0)].to_vec(), s[chunk_at(1)].to_vec());
        let mut swapped = s.clone();
        swapped[chunk_at(0)].copy_from_slice(&c1);
        swapped[chunk_at(1)].copy_from_slice(&c0);
        assert!(open(&k, &swapped).is_err());
        let mut repeated = s.clone();
        repeated[chunk_at(1)].copy_from_slice(&c0);
        assert!(open(&k, &repeated).is_err());
        let mut appended = s.clone();
        appended.push(0);
        assert!(open(&k, &appended).is_err());
        // Appended after an empty last chunk (data ending on a boundary) too.
        let mut boundary = seal(&k, &data(CHUNK));
        boundary.extend_from_slice(&[0; 20]);
        assert!(open(&k, &boundary).is_err());
        // The last chunk of another stream (same key) spliced on: another prefix, refused.
        let other = seal(&k, &data(10));
        let mut spliced = s[..chunk_at(3).start].to_vec();
        spliced.extend_from_slice(&other[HEADER_LEN..]);
        assert!(open(&k, &spliced).is_err());
        // Dropping a middle chunk: the counter no longer matches.
        let mut dropped = s[..chunk_at(1).start].to_vec();
        dropped.extend_from_slice(&s[chunk_at(2).start..]);
        assert!(open(&k, &dropped).is_err());
    }

    #[test]
    fn a_hostile_header_allocates_nothing_large() {
        let k = key(8);
        let mut s = seal(&k, &data(10));
        s[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(OpenReader::new(&k, &s[..]).is_err());
        assert!(OpenReader::new(&k, &b"MGSEAL1\n"[..]).is_err());
        assert!(OpenReader::new(&k, &b"not a backup at all, really not"[..]).is_err());
    }
}
