//! Splitting a byte stream someone else writes (a build, a process, a node) into lines, in
//! time linear in its length and memory bounded by the longest line kept: a build that prints
//! 200 MB without a newline costs one cut line, not a rescan of its buffer per chunk.

/// Per-app budget of archived process output (the nodes' archives, the controller's
/// event log) when `MAGRATHEA_LOG_BUDGET` is not set.
pub const DEFAULT_LOG_BUDGET: u64 = 100 << 20;

/// The log budget per app, in bytes (`MAGRATHEA_LOG_BUDGET`, default 100 MB).
pub fn log_budget() -> u64 {
    std::env::var("MAGRATHEA_LOG_BUDGET")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|b| *b > 0)
        .unwrap_or(DEFAULT_LOG_BUDGET)
}

/// Longest line kept; the rest of a longer one is dropped up to its newline.
pub const MAX_LINE: usize = 16 << 10;

/// Accumulates chunks and hands out whole lines (without the `\n`, lossy UTF-8).
#[derive(Debug)]
pub struct LineBuf {
    buf: Vec<u8>,
    max: usize,
    /// Bytes of the current line dropped past `max`.
    dropped: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf::new(MAX_LINE)
    }
}

impl LineBuf {
    pub fn new(max: usize) -> LineBuf {
        LineBuf {
            buf: Vec::new(),
            max: max.max(1),
            dropped: 0,
        }
    }

    /// Adds a chunk; returns the lines it completed.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut out = vec![];
        // Each byte is looked at once: `memchr`-style search in the new data only.
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            self.take(&data[..pos]);
            out.push(self.line());
            data = &data[pos + 1..];
        }
        self.take(data);
        out
    }

    /// What is left without a final newline, if anything.
    pub fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() && self.dropped == 0 {
            return None;
        }
        Some(self.line())
    }

    fn take(&mut self, part: &[u8]) {
        let room = self.max.saturating_sub(self.buf.len());
        let kept = part.len().min(room);
        self.buf.extend_from_slice(&part[..kept]);
        self.dropped += part.len() - kept;
    }

    fn line(&mut self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!(" [... line cut: {} more bytes]", self.dropped));
        }
        self.buf.clear();
        self.dropped = 0;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunks() {
        let mut b = LineBuf::default();
        assert_eq!(b.push(b"ab"), Vec::<String>::new());
        assert_eq!(b.push(b"c\nd\n\ne"), vec!["abc", "d", ""]);
        assert_eq!(b.finish().as_deref(), Some("e"));
        assert_eq!(b.finish(), None);
    }

    #[test]
    fn a_huge_line_is_cut_and_memory_stays_bounded() {
        let mut b = LineBuf::new(10);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..200 {
            assert!(b.push(&chunk).is_empty());
            assert!(
                b.buf.capacity() <= 64,
                "buffer grew to {}",
                b.buf.capacity()
            );
        }
        let lines = b.push(b"\nnext\n");
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("xxxxxxxxxx [... line cut: "),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "next");
    }
}
