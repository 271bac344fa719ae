//! Bytes between async tasks and blocking threads, as channel chunks: [`ChunkReader`] reads
//! a channel's chunks as one stream, [`ChunkWriter`] writes a stream into a channel. The
//! agent hands a received release to its unpacking thread this way; the controller, a
//! client's dump to its sealing thread and a backup to a client's stdout.

use tokio::sync::mpsc;

/// The chunks, read in order, then EOF when every sender is gone (from a blocking thread).
pub struct ChunkReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub fn new(chunks: mpsc::Receiver<Vec<u8>>) -> Self {
        ChunkReader {
            chunks,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.chunks.blocking_recv() {
                Some(c) => (self.cur, self.pos) = (c, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What is written goes to the channel as chunks (from a blocking thread); a gone receiver
/// is a broken pipe. How many bytes went.
pub struct ChunkWriter {
    chunks: mpsc::Sender<Vec<u8>>,
    pub written: u64,
}

impl ChunkWriter {
    pub fn new(chunks: mpsc::Sender<Vec<u8>>) -> Self {
        ChunkWriter { chunks, written: 0 }
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.chunks.blocking_send(b.to_vec()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away")
        })?;
        self.written += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
