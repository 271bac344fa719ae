//! What a node offers app processes when it sizes itself from the machine.

use crate::node::proto::Capacity;

/// Memory kept for the system and Docker when a node sizes itself from the machine: a
/// tenth of it, at least 256 MiB and at most 2 GiB.
pub fn memory_reserve(total: i64) -> i64 {
    (total / 10).clamp(256 << 20, 2 << 30)
}

/// The machine's `MemTotal` (from `/proc/meminfo`) minus [`memory_reserve`], and its CPUs.
pub fn machine_capacity() -> Capacity {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_total(&s))
        .unwrap_or(0);
    Capacity {
        memory: (total - memory_reserve(total)).max(0),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    }
}

/// `MemTotal:       24554112 kB` in bytes.
pub(super) fn parse_mem_total(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let n: i64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => n.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_from_meminfo() {
        let m = "MemTotal:       24554112 kB\nMemFree:        22000000 kB\n";
        assert_eq!(parse_mem_total(m), Some(24554112 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(memory_reserve(24 << 30), 2 << 30);
        assert_eq!(memory_reserve(1 << 30), 256 << 20);
        let c = machine_capacity();
        assert!(c.memory > 0 && c.cpus > 0, "{c:?}");
    }
}
