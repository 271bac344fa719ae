//! AFL++ harness for the fuzz targets of `tests/fuzz` (the same functions the suite's short
//! deterministic pass runs), so coverage feedback drives the same properties. One binary for
//! every target: `FUZZ_TARGET` names it. `magrathea-afl --seeds DIR --dict FILE` writes the
//! target's seeds and dictionary in AFL's formats. Run it with `scripts/fuzz-afl.sh`.

// The mutation driver's own loop is unused here: AFL++ mutates.
#![allow(dead_code)]

// At the crate root, so the targets' `super::driver` resolves as it does in tests/fuzz.rs.
#[path = "../../../tests/fuzz/driver.rs"]
mod driver;
#[path = "../../../tests/fuzz/targets.rs"]
mod targets;

use std::fs;
use std::path::PathBuf;

use driver::Target;

fn target() -> Target {
    let name = std::env::var("FUZZ_TARGET").unwrap_or_default();
    targets::all()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = targets::all().iter().map(|t| t.name).collect();
            eprintln!("FUZZ_TARGET must be one of: {}", names.join(" "));
            std::process::exit(2)
        })
}

/// AFL's dictionary format: one `"token"` per line, bytes outside printable ASCII as `\xNN`.
fn dict_line(token: &str) -> String {
    let mut s = String::from("\"");
    for b in token.bytes() {
        match b {
            b'"' | b'\\' => s.push_str(&format!("\\x{b:02x}")),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

fn main() {
    let t = target();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir, dflag, dict] = args.as_slice() {
        assert!(flag == "--seeds" && dflag == "--dict", "usage: --seeds DIR --dict FILE");
        let dir = PathBuf::from(dir);
        fs::create_dir_all(&dir).expect("seed dir");
        for (i, seed) in (t.seeds)().iter().enumerate() {
            fs::write(dir.join(format!("seed-{i:03}")), seed).expect("write seed");
        }
        let lines: Vec<String> = t.dict.iter().map(|d| dict_line(d)).collect();
        fs::write(dict, lines.join("\n") + "\n").expect("write dict");
        return;
    }
    let max = t.max_len;
    afl::fuzz!(|data: &[u8]| {
        if data.len() <= max {
            (t.run)(data);
        }
    });
}
