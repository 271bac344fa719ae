//! Fuzzing of every parser that reads hostile input: SSH command lines, names,
//! `magrathea.yml`, Procfiles, `bin/release` output, `app.json`, the hook and node protocol
//! frames, sealed backup streams, and release tarball extraction. Targets are in
//! `fuzz/targets.rs`, the mutation driver in `fuzz/driver.rs`.
//!
//! The suite runs a short deterministic pass of each target (fixed seed and case count).
//! `scripts/fuzz.sh` runs `fuzz_timed` for FUZZ_SECONDS per target (the suite: 1 s each) and reports
//! executions and crashes; FUZZ_REPLAY=FILE replays one saved input (of FUZZ_TARGETS).

mod fuzz {
    pub mod driver;
    pub mod targets;
}

use std::time::Duration;

use fuzz::driver::{escaped, exec, fuzz, Budget, Target};
use fuzz::targets::all;

fn target(name: &str) -> Target {
    all()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// The suite's pass: deterministic, a few hundred cases per target.
fn quick(name: &str, cases: u64) {
    let t = target(name);
    let stats = fuzz(&t, 0x6d61_6772_6174_6865, Budget::Cases(cases));
    if let Some(c) = stats.crashes.first() {
        panic!(
            "fuzz target {name}: {} crashing inputs in {} runs; first: {}\ninput: {}",
            stats.crash_count,
            stats.execs,
            c.message,
            escaped(&c.input)
        );
    }
}

#[test]
fn command() {
    quick("command", 1500);
}

#[test]
fn names() {
    quick("names", 3000);
}

#[test]
fn magrathea_yml() {
    quick("magrathea_yml", 1500);
}

#[test]
fn procfile() {
    quick("procfile", 3000);
}

#[test]
fn release_yaml() {
    quick("release_yaml", 1500);
}

#[test]
fn buildpack_spec() {
    quick("buildpack_spec", 1500);
}

#[test]
fn app_json() {
    quick("app_json", 1500);
}

#[test]
fn hook_frames() {
    quick("hook_frames", 3000);
}

#[test]
fn node_frames() {
    quick("node_frames", 2000);
}

#[test]
fn sealed_stream() {
    quick("sealed_stream", 3000);
}

#[test]
fn tar() {
    quick("tar", 600);
}

/// `scripts/fuzz.sh`: each target (FUZZ_TARGETS, comma-separated, default all) for
/// FUZZ_SECONDS (1 when unset, as in the suite) from FUZZ_SEED (default: the time); one line per target with
/// its executions and crashes; crashing inputs saved to FUZZ_OUT (default
/// target/fuzz-crashes). Fails if anything crashed.
#[test]
fn fuzz_timed() {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let wanted: Option<Vec<String>> =
        env("FUZZ_TARGETS").map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let targets: Vec<Target> = all()
        .into_iter()
        .filter(|t| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|n| n == t.name))
        })
        .collect();
    assert!(!targets.is_empty(), "no such target in FUZZ_TARGETS");

    if let Some(file) = env("FUZZ_REPLAY") {
        let input = std::fs::read(&file).unwrap();
        for t in &targets {
            match exec(t, &input) {
                None => println!("{}: {file} runs clean", t.name),
                Some(m) => panic!("{}: {file} crashes: {m}", t.name),
            }
        }
        return;
    }

    // Unset (the suite): one second per target from a fixed seed, so a run is repeatable.
    let suite = env("FUZZ_SECONDS").is_none();
    let secs: u64 = env("FUZZ_SECONDS").map_or(1, |s| s.parse().expect("FUZZ_SECONDS"));
    let seed: u64 = env("FUZZ_SEED").map_or_else(
        || {
            if suite {
                return 0x6d61_6772_6174_6865;
            }
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().expect("FUZZ_SEED"),
    );
    let out = std::path::PathBuf::from(env("FUZZ_OUT").unwrap_or("target/fuzz-crashes".into()));
    println!("fuzz: seed {seed}, {secs} s per target");
    let mut total = 0;
    for t in &targets {
        let stats = fuzz(t, seed, Budget::Time(Duration::from_secs(secs)));
        println!(
            "fuzz {:<14} {:>10} executions {:>8.0}/s {:>9} accepted {:>4} crashes",
            t.name,
            stats.execs,
            stats.execs as f64 / secs.max(1) as f64,
            stats.accepted,
            stats.crash_count
        );
        for (i, c) in stats.crashes.iter().enumerate() {
            std::fs::create_dir_all(&out).unwrap();
            let path = out.join(format!("{}-{seed}-{i}", t.name));
            std::fs::write(&path, &c.input).unwrap();
            println!(
                "  crash saved to {} (replay: FUZZ_TARGETS={} FUZZ_REPLAY={0} scripts/fuzz.sh)\n  {}",
                path.display(),
                t.name,
                c.message.replace('\n', "\n  ")
            );
        }
        total += stats.crash_count;
    }
    assert_eq!(total, 0, "fuzzing found crashes");
}
