//! Packs a directory as a release tarball and reports digest, size and time.
//!
//! `cargo run --release --example pack -- DIR OUT.tar.gz`
//!
//! The manifest is `{}`; the header mtime is `$SOURCE_DATE_EPOCH` (default 0). For
//! measurements, `PACK_THREADS` (compression threads) and `PACK_CHUNK` (chunk size in KiB)
//! override the defaults; a different chunk size gives different bytes.

use std::path::Path;
use std::time::Instant;

use magrathea::release::{pgzip, tarball};

fn main() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let [dir, out] = args.as_slice() else {
        eprintln!("usage: pack DIR OUT.tar.gz");
        std::process::exit(2);
    };
    let mtime = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.parse()?,
        Err(_) => 0,
    };
    let mut opts = pgzip::Options::default();
    if let Ok(s) = std::env::var("PACK_THREADS") {
        opts.threads = s.parse()?;
    }
    if let Ok(s) = std::env::var("PACK_CHUNK") {
        opts.chunk_size = s.parse::<usize>()? << 10;
    }
    let start = Instant::now();
    let packed = tarball::pack_with(Path::new(dir), b"{}\n", mtime, Path::new(out), opts)?;
    println!(
        "sha256 {} size {} seconds {:.3}",
        packed.sha256,
        packed.size,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
