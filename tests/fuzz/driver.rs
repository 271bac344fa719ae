//! A small mutation fuzzer: seeds, then mutants of them (libFuzzer's mutations: bit flips,
//! interesting bytes, inserts, deletes, copies, dictionary tokens, splices), run under
//! `catch_unwind`. Deterministic for a seed. Without coverage feedback the corpus does not
//! grow by merit; a ring of recent mutants lets mutations stack deeper than one step.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

/// One fuzz target: a function of raw bytes (the shape libFuzzer and AFL use), the seeds it
/// starts from and tokens worth inserting.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub dict: &'static [&'static str],
    pub max_len: usize,
}

/// splitmix64: tiny, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x1b, 0x7f, 0x80, 0xc3, 0xff, b'\n', b'\r', b'\t', b' ', b'"', b'\'', b'\\', b':', b'-',
    b'/', b'.', b'{', b'}', b'[', b']', b'#', b'=', b'*', b'?', b'&', b'!', b'|', b'>', b'%', b'@',
    b'`', b',', b'0', b'9',
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&str], max_len: usize) {
    let depth = rng.below(4);
    let steps = 1 + rng.below(1 << depth);
    for _ in 0..steps {
        let len = input.len();
        let at = rng.below(len + 1);
        match rng.below(12) {
            0 if len > 0 => input[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => input[at.min(len - 1)] = rng.next() as u8,
            2 if len > 0 => input[at.min(len - 1)] = INTERESTING[rng.below(INTERESTING.len())],
            3 => {
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    input.insert(at, rng.next() as u8);
                }
            }
            4 => {
                let b = INTERESTING[rng.below(INTERESTING.len())];
                let most = if rng.chance(8) { 4096 } else { 16 };
                let n = 1 + rng.below(most);
                input.splice(at..at, std::iter::repeat_n(b, n));
            }
            5 if len > 0 => {
                let n = 1 + rng.below((len - at.min(len - 1)).min(64));
                let start = at.min(len - 1);
                input.drain(start..(start + n).min(len));
            }
            6 if len > 0 => {
                let start = rng.below(len);
                let n = 1 + rng.below((len - start).min(256));
                let chunk = input[start..start + n].to_vec();
                let times = if rng.chance(16) { 1 + rng.below(64) } else { 1 };
                for _ in 0..times {
                    input.splice(at..at, chunk.iter().copied());
                }
            }
            7 | 8 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())].as_bytes();
                if rng.chance(2) || len == 0 {
                    input.splice(at..at, tok.iter().copied());
                } else {
                    let start = at.min(len - 1);
                    let end = (start + tok.len()).min(len);
                    input.splice(start..end, tok.iter().copied());
                }
            }
            9 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let s = rng.below(other.len());
                    let n = 1 + rng.below(other.len() - s);
                    input.splice(at..at, other[s..s + n].iter().copied());
                }
            }
            10 if len > 0 => input.truncate(at),
            11 if len > 0 => {
                // Numbers: nudge an ASCII digit, or replace it with a large one.
                let i = at.min(len - 1);
                if input[i].is_ascii_digit() {
                    if rng.chance(2) {
                        input[i] = b'0' + rng.below(10) as u8;
                    } else {
                        let big = ["4294967296", "18446744073709551616", "-1", "1e999"];
                        input.splice(i..=i, big[rng.below(big.len())].bytes());
                    }
                }
            }
            _ => {}
        }
    }
    input.truncate(max_len);
}

/// Called by a target when the code under test accepted its input (parsed it, extracted
/// it): a run where nearly nothing gets past the first check explores little.
pub fn accepted() {
    ACCEPTED.with(|a| a.set(true));
}

thread_local! {
    static ACCEPTED: Cell<bool> = const { Cell::new(false) };
    static IN_TARGET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics inside a target are recorded, not printed; others keep the default hook.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_TARGET.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs one input; the panic message if it panicked.
pub fn exec(target: &Target, input: &[u8]) -> Option<String> {
    install_hook();
    IN_TARGET.with(|f| f.set(true));
    ACCEPTED.with(|a| a.set(false));
    let r = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    IN_TARGET.with(|f| f.set(false));
    r.err().map(|payload| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into())
    })
}

pub enum Budget {
    Cases(u64),
    Time(Duration),
}

pub struct Crash {
    pub message: String,
    pub input: Vec<u8>,
}

pub struct Stats {
    pub execs: u64,
    /// Of those, how many the code under test accepted.
    pub accepted: u64,
    /// Distinct crashes (by panic message), with the first input of each.
    pub crashes: Vec<Crash>,
    /// Every crashing execution, duplicates included.
    pub crash_count: u64,
}

/// Seeds first, then mutants, until the budget is spent.
pub fn fuzz(target: &Target, seed: u64, budget: Budget) -> Stats {
    let mut rng = Rng::new(seed);
    let seeds = (target.seeds)();
    let mut stats = Stats {
        execs: 0,
        accepted: 0,
        crashes: vec![],
        crash_count: 0,
    };
    let start = Instant::now();
    let record = |stats: &mut Stats, input: &[u8], msg: Option<String>| {
        stats.execs += 1;
        stats.accepted += u64::from(ACCEPTED.with(|a| a.replace(false)));
        if let Some(message) = msg {
            stats.crash_count += 1;
            let key = |m: &str| m.lines().take(2).collect::<Vec<_>>().join("\n");
            if stats.crashes.len() < 32
                && !stats
                    .crashes
                    .iter()
                    .any(|c| key(&c.message) == key(&message))
            {
                stats.crashes.push(Crash {
                    message,
                    input: input.to_vec(),
                });
            }
        }
    };
    for s in &seeds {
        let m = exec(target, s);
        record(&mut stats, s, m);
    }
    let mut recent: Vec<Vec<u8>> = Vec::new();
    let mut next_slot = 0;
    loop {
        let done = match budget {
            Budget::Cases(n) => stats.execs >= n,
            Budget::Time(d) => stats.execs.is_multiple_of(16) && start.elapsed() >= d,
        };
        if done {
            break;
        }
        let mut input = if rng.chance(32) || seeds.is_empty() {
            // Fresh: random bytes, or dictionary tokens strung together.
            let mut v = Vec::new();
            if rng.chance(2) && !target.dict.is_empty() {
                for _ in 0..1 + rng.below(16) {
                    v.extend_from_slice(target.dict[rng.below(target.dict.len())].as_bytes());
                    if rng.chance(3) {
                        v.push(INTERESTING[rng.below(INTERESTING.len())]);
                    }
                }
            } else {
                for _ in 0..rng.below(128) {
                    v.push(rng.next() as u8);
                }
            }
            v
        } else if !recent.is_empty() && rng.chance(4) {
            recent[rng.below(recent.len())].clone()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        mutate(&mut rng, &mut input, &seeds, target.dict, target.max_len);
        let m = exec(target, &input);
        record(&mut stats, &input, m);
        if recent.len() < 512 {
            recent.push(input);
        } else {
            recent[next_slot] = input;
            next_slot = (next_slot + 1) % 512;
        }
    }
    stats
}

/// Bytes as a Rust byte-string literal, for a failure message one can paste into a test.
pub fn escaped(input: &[u8]) -> String {
    let shown: String = input
        .iter()
        .take(512)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if input.len() > 512 {
        format!("b\"{shown}\"... ({} bytes)", input.len())
    } else {
        format!("b\"{shown}\"")
    }
}
