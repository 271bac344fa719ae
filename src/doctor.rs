//! `magrathea doctor`: checks what the controller (or a node) needs from its machine and says,
//! one line per finding, what is wrong and how to fix it. Exit status 1 when anything failed.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// How a finding went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub what: &'static str,
    pub detail: String,
    /// What to do about it (for warnings and failures).
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag}  {}: {}", self.what, self.detail)?;
        if self.level != Level::Ok && !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

fn ok(what: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        level: Level::Ok,
        what,
        detail: detail.into(),
        fix: String::new(),
    }
}

fn bad(level: Level, what: &'static str, detail: impl Into<String>, fix: &str) -> Finding {
    Finding {
        level,
        what,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// What to check.
pub struct Options<'a> {
    /// The controller's data dir, if this machine runs one.
    pub data: Option<&'a Path>,
    /// Addresses the server will listen on (checked free, or held by a running server).
    pub listen: Vec<String>,
    /// Stacks whose images must be present.
    pub stacks: Vec<String>,
    /// Free space below this is a warning.
    pub min_free: u64,
}

pub async fn run(o: &Options<'_>) -> Vec<Finding> {
    let mut out = vec![git(), user()];
    out.extend(docker(&o.stacks).await);
    if let Some(data) = o.data {
        out.extend(data_dir(data, o.min_free));
    }
    for addr in &o.listen {
        out.push(port(addr));
    }
    out
}

fn git() -> Finding {
    match Command::new("git").arg("--version").output() {
        Ok(o) if o.status.success() => ok("git", String::from_utf8_lossy(&o.stdout).trim()),
        _ => bad(
            Level::Fail,
            "git",
            "not found on PATH",
            "apt-get install git (pushes run the real git receive-pack)",
        ),
    }
}

fn user() -> Finding {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        bad(
            Level::Warn,
            "user",
            "running as root",
            "run as an unprivileged user in the docker group (packaging/systemd/*.service)",
        )
    } else {
        ok("user", "not root")
    }
}

async fn docker(stacks: &[String]) -> Vec<Finding> {
    let d = match crate::docker::Docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            return vec![bad(
                Level::Fail,
                "docker",
                format!("cannot reach the engine: {e}"),
                "start dockerd (scripts/docker-up.sh) and add this user to the docker group",
            )]
        }
    };
    let info = match d.raw().info().await {
        Ok(i) => i,
        Err(e) => {
            return vec![bad(
                Level::Fail,
                "docker",
                format!("the engine does not answer: {e}"),
                "check dockerd's log; scripts/docker-up.sh starts it",
            )]
        }
    };
    let mut out = vec![];
    let version = info.server_version.clone().unwrap_or_default();
    out.push(ok("docker", format!("engine {version}")));
    let driver = info.driver.clone().unwrap_or_default();
    out.push(if driver == "overlay2" {
        ok("storage driver", driver)
    } else {
        bad(
            Level::Fail,
            "storage driver",
            format!("{driver:?}, not overlay2 (each process's /app is an overlay; vfs copies whole images)"),
            "start dockerd with --storage-driver=overlay2 on ext4 or xfs",
        )
    });
    // The engine's clock against ours: build times, log order and certificates rely on it.
    if let Some(t) = info.system_time.as_deref() {
        if let Ok(theirs) = chrono_like_parse(t) {
            let skew = (theirs - crate::timefmt::now()).abs();
            out.push(if skew <= 5 {
                ok("clock", format!("within {skew} s of the Docker engine"))
            } else {
                bad(
                    Level::Fail,
                    "clock",
                    format!("{skew} s apart from the Docker engine's"),
                    "run an NTP client (systemd-timesyncd or chrony) on every machine",
                )
            });
        }
    }
    for stack in stacks {
        // A stack is a build and a run image, or one image for both (the tiny stack).
        let fix = format!("run scripts/stack-{stack}.sh (made offline from Debian packages)");
        let mut found = vec![];
        for image in [
            format!("magrathea/stack-{stack}-build:latest"),
            format!("magrathea/stack-{stack}-run:latest"),
            format!("magrathea/stack-{stack}:latest"),
        ] {
            if let Ok(Some(_)) = d.image_id(&image).await {
                found.push(image);
            }
        }
        let split = found
            .iter()
            .filter(|i| !i.starts_with(&format!("magrathea/stack-{stack}:")))
            .count();
        out.push(match (split, found.len()) {
            (2, _) => ok("stack", format!("{stack}: {} and {}", found[0], found[1])),
            (0, 1) => ok("stack", format!("{stack}: {} (builds and runs)", found[0])),
            (1, _) => bad(
                Level::Fail,
                "stack",
                format!("{stack}: only {} of its build and run images", found[0]),
                &fix,
            ),
            _ => bad(Level::Fail, "stack", format!("{stack}: no image"), &fix),
        });
    }
    out
}

/// Seconds since the epoch of an RFC 3339 time as Docker prints it.
fn chrono_like_parse(t: &str) -> Result<i64, ()> {
    crate::timefmt::parse_rfc3339(t)
        .map(|(secs, _)| secs)
        .ok_or(())
}

fn data_dir(data: &Path, min_free: u64) -> Vec<Finding> {
    let mut out = vec![];
    let Ok(m) = std::fs::metadata(data) else {
        return vec![bad(
            Level::Fail,
            "data dir",
            format!("{} does not exist", data.display()),
            "magrathea init --data DIR",
        )];
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        out.push(bad(
            Level::Fail,
            "data dir",
            format!(
                "{} belongs to uid {}, not to this user ({me})",
                data.display(),
                m.uid()
            ),
            "chown -R the data dir to the user that runs serve",
        ));
    } else if m.mode() & 0o022 != 0 {
        out.push(bad(
            Level::Fail,
            "data dir",
            format!(
                "{} is writable by others (mode {:o})",
                data.display(),
                m.mode() & 0o7777
            ),
            "chmod go-w the data dir",
        ));
    } else {
        out.push(ok("data dir", data.display().to_string()));
    }
    for secret in ["host_ed25519", "config.key"] {
        let p = data.join(secret);
        match std::fs::metadata(&p) {
            Ok(m) if m.mode() & 0o077 != 0 => out.push(bad(
                Level::Fail,
                "secret file",
                format!(
                    "{secret} is readable by others (mode {:o})",
                    m.mode() & 0o7777
                ),
                "chmod 600 it",
            )),
            Ok(_) => out.push(ok("secret file", format!("{secret} is private"))),
            Err(_) if secret == "config.key" => {} // made at the first config:set
            Err(_) => out.push(bad(
                Level::Fail,
                "secret file",
                format!("{secret} missing"),
                "magrathea init --data DIR",
            )),
        }
    }
    out.push(match free_bytes(data) {
        Some(free) if free < min_free => bad(
            Level::Warn,
            "disk",
            format!(
                "{} free under {} (builds, releases and caches need room)",
                crate::build::human(free),
                data.display()
            ),
            "free space or move the data dir to a bigger disk",
        ),
        Some(free) => ok("disk", format!("{} free", crate::build::human(free))),
        None => bad(Level::Warn, "disk", "cannot read free space", ""),
    });
    out
}

fn free_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
}

fn port(addr: &str) -> Finding {
    match TcpListener::bind(addr) {
        Ok(_) => ok("port", format!("{addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bad(
            Level::Warn,
            "port",
            format!("{addr} is in use (a running server, or something else)"),
            "stop what holds it, or pick another address with --listen/--http",
        ),
        Err(e) => bad(
            Level::Fail,
            "port",
            format!("cannot listen on {addr}: {e}"),
            "ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port or grant it",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_one_line_with_a_fix() {
        let f = bad(Level::Fail, "disk", "1 KB free", "free space");
        assert_eq!(f.to_string(), "FAIL  disk: 1 KB free; fix: free space");
        assert_eq!(
            ok("git", "git version 2").to_string(),
            "ok    git: git version 2"
        );
    }

    #[test]
    fn data_dir_modes_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("host_ed25519"), "k").unwrap();
        std::fs::set_permissions(
            t.path().join("host_ed25519"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let f = data_dir(t.path(), 0);
        assert!(f
            .iter()
            .any(|f| f.level == Level::Fail && f.detail.contains("host_ed25519")));
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let f = data_dir(t.path(), 0);
        assert!(f
            .iter()
            .any(|f| f.what == "data dir" && f.level == Level::Fail));
        assert!(data_dir(&t.path().join("nope"), 0)[0].level == Level::Fail);
    }

    #[test]
    fn a_taken_port_is_reported() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        assert_eq!(port(&addr).level, Level::Warn);
        drop(l);
        assert_eq!(port(&addr).level, Level::Ok);
    }
}
