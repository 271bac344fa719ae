//! Failpoints: named places in the pipeline where a test can kill the controller, to prove
//! that what a crash leaves is put right at the next start (`tests/crash.rs`).
//!
//! Compiled in only with the `failpoints` cargo feature (test builds, `scripts/test.sh`);
//! without it [`hit`] is an empty inline function. With it, `MAGRATHEA_FAILPOINT=<name>` in
//! the environment makes the first [`hit`] of that name write one line to stderr and then
//! SIGKILL its own process: a real kill (no destructors, no flushing, no graceful
//! shutdown), as `kill -9` or a power loss would leave things.
//!
//! The names: `build` (a build container runs), `pack` (a `.cooking-*` tarball is written,
//! not yet renamed), `prepare` (a node received the release), `release-command` (the
//! release command runs on its node), `health-check` (new processes started, being checked),
//! `switch` (a node switched, the rollout not finished), `go-live` (every node switched; the
//! store transaction and the router move not yet), `live` (the store transaction recorded the
//! new release as live; the router, the old processes and git's refs not moved yet), `verdict`
//! (the push recorded as accepted, the answer not yet given to git's hook).

/// The environment variable that arms a failpoint.
#[cfg(feature = "failpoints")]
pub(crate) const VAR: &str = "MAGRATHEA_FAILPOINT";

/// Kills this process (SIGKILL) if the failpoint `name` is armed.
#[cfg(feature = "failpoints")]
pub(crate) fn hit(name: &str) {
    if std::env::var(VAR).is_ok_and(|v| v == name) {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "failpoint {name}: killing pid {} with SIGKILL",
            std::process::id()
        );
        // SAFETY: kill(2) on our own pid with a constant signal; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // SIGKILL cannot be caught; nothing after this runs.
        std::process::abort();
    }
}

/// Without the `failpoints` feature: nothing, and compiled away.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}

#[cfg(test)]
mod tests {
    /// CI runs the suite with the failpoints in (scripts/test.sh), or `tests/crash.rs`
    /// would not be built and the crash test would be skipped without a word.
    #[test]
    fn ci_builds_have_the_failpoints() {
        let ci = std::env::var_os("CI").is_some_and(|v| v == "true");
        let compiled_in = cfg!(feature = "failpoints");
        if ci && !compiled_in {
            panic!("CI must build with --features failpoints (scripts/test.sh does)");
        }
    }
}
