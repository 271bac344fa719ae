//! What keeps tenants apart: every container that runs an app's code (its build, its
//! processes, its release command, `run`, `shell`) runs as the app's own uid, with no
//! capabilities, `no-new-privileges` and a pids limit.
//!
//! # Uids
//!
//! The controller gives each app a uid when it is created: [`UID_BASE`] plus a sequence
//! number that is never handed out again (an app destroyed and created again under the same
//! name gets a new one, so nothing the old app left behind is the new app's). The uid is the
//! gid too. The range starts at 1 900 000 000: above the regular users (1000-60000), the
//! subordinate uids `useradd` hands out for rootless containers (100000 up, 65536 a user) and
//! systemd's container range (524288-1879048191), below 2^31. A node refuses a uid below the
//! base or one that names a host account (`getpwuid`) or falls in an `/etc/subuid` range, so
//! an app never shares a uid with a login user.
//!
//! # Networks
//!
//! Each app has its own Docker bridge network on each Docker host
//! (`mg-<instance>-u<uid>`): its processes, release command, `run` and builds are alone in
//! it with the app's other containers. Docker's iptables rules (`DOCKER-ISOLATION-STAGE-*`)
//! drop traffic from one bridge to another and NAT gives egress (package registries, APIs).
//! A web process's port is published (DNAT) on the node's loopback, where the health
//! checker probes it, and on the address the controller reaches the node at, where the
//! router sends requests; a packet another app's container sends there is DNATed to the
//! process's bridge and dropped by the isolation chain. No capability means no raw or
//! packet socket, and a network namespace of its own holds no other app's traffic.
//!
//! Docker's chain alone is not enough: each time dockerd creates any network it deletes
//! and re-inserts the `FORWARD -j DOCKER-ISOLATION-STAGE-1` jump, and in that gap the
//! per-bridge `ACCEPT` rules let one bridge reach another (a whole local TCP exchange fits
//! in it). So every app network also gets rules of ours, in chains dockerd never touches
//! (`MAGRATHEA-ISOLATION-1/2` in the `mangle` table's `FORWARD`, which runs before the
//! `filter` table's): traffic entering from one app bridge and leaving by another is dropped.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{HostConfig, NetworkCreateRequest};

/// The first app's uid is `UID_BASE + 1`.
pub const UID_BASE: u32 = 1_900_000_000;
/// The last uid of the range (below systemd's "foreign" range at 0x7FFE0000).
pub const UID_MAX: u32 = 2_100_000_000;

/// Processes (threads count) a build may run at once: package managers fan out.
pub const BUILD_PIDS: i64 = 2048;
/// Processes (threads count) one app process container may run at once.
pub const PROCESS_PIDS: i64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UidError {
    #[error("app uid {0} is outside the app range {UID_BASE}-{UID_MAX}; the controller sends a wrong uid (upgrade it?)")]
    OutOfRange(u32),
    #[error("app uid {uid} is the host account '{name}'; remove that account or its uid from this host, an app must share no uid with a host user")]
    HostAccount { uid: u32, name: String },
    #[error("app uid {uid} is a subordinate uid of host user '{owner}' (/etc/subuid); shrink that range, an app must share no uid with a host user")]
    Subordinate { uid: u32, owner: String },
}

/// Checks that `uid` may run an app on this host (see the module docs).
pub fn check_uid(uid: u32) -> Result<(), UidError> {
    if !(UID_BASE < uid && uid <= UID_MAX) {
        return Err(UidError::OutOfRange(uid));
    }
    if let Some(name) = host_account(uid) {
        return Err(UidError::HostAccount { uid, name });
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if let Some(owner) = subordinate_owner(&subuid, uid) {
        return Err(UidError::Subordinate { uid, owner });
    }
    Ok(())
}

/// The name of the host account with this uid, if any (through NSS, so LDAP users count).
fn host_account(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` outlives the use of `pw`.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The owner of the `/etc/subuid` range (`name:start:count` lines) holding `uid`.
fn subordinate_owner(subuid: &str, uid: u32) -> Option<String> {
    subuid.lines().find_map(|l| {
        let mut f = l.trim().splitn(3, ':');
        let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
        let (start, count): (u64, u64) = (start.parse().ok()?, count.parse().ok()?);
        (start <= uid as u64 && (uid as u64) < start + count).then(|| owner.to_string())
    })
}

/// The confinement every container of an app gets, on top of what the caller sets: the
/// app's uid and gid, every capability dropped, no privilege gain through setuid files, a
/// pids limit. Nothing an app runs needs a capability: buildpacks install into the app
/// dir and the cache, never system-wide, so builds run with none either.
pub fn confine(user: &mut Option<String>, host: &mut HostConfig, uid: u32, pids: i64) {
    *user = Some(format!("{uid}:{uid}"));
    host.cap_drop = Some(vec!["ALL".into()]);
    host.cap_add = None;
    host.security_opt = Some(vec!["no-new-privileges".into()]);
    host.pids_limit = Some(pids);
    host.privileged = Some(false);
}

/// `confine` on a container's create body (its user and host config, made if missing).
pub fn confine_body(body: &mut bollard::models::ContainerCreateBody, uid: u32, pids: i64) {
    let host = body.host_config.get_or_insert_with(Default::default);
    confine(&mut body.user, host, uid, pids);
}

/// The network of the app with this uid on the Docker host of `instance` (the controller's
/// for builds, a node's for processes).
pub fn network_name(instance: &str, uid: u32) -> String {
    format!("mg-{instance}-u{uid}")
}

/// Docker 20.10 creates a second network of an existing name rather than refusing: creation
/// is serialized in this process (the controller and its built-in node share it).
static NETWORKS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error(
        "Docker does not isolate network {0} from other apps' networks (no DOCKER-ISOLATION \
         rule for its bridge: is dockerd running with --iptables=false? restart it with \
         scripts/docker-up.sh)"
    )]
    NotIsolated(String),
    #[error("cannot add the isolation rules of network {network}: {error}")]
    Guard { network: String, error: String },
}

/// The app's network on this Docker host, created if missing; returns its name. A network
/// is only used once Docker's isolation rules for its bridge are in place.
pub async fn ensure_network(
    docker: &bollard::Docker,
    instance: &str,
    uid: u32,
) -> Result<String, NetworkError> {
    let name = network_name(instance, uid);
    let _one = NETWORKS.lock().await;
    // Checked every time: a network made earlier is unguarded if dockerd has since been
    // restarted without iptables.
    if let Some(n) = inspect(docker, &name).await? {
        let id = n.id.unwrap_or_default();
        if !isolated(&id).await {
            return Err(NetworkError::NotIsolated(name));
        }
        guard(&bridge_of(&id))
            .await
            .map_err(|error| NetworkError::Guard {
                network: name.clone(),
                error,
            })?;
        return Ok(name);
    }
    let created = docker
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([
                ("magrathea.instance".to_string(), instance.to_string()),
                ("magrathea.uid".to_string(), uid.to_string()),
            ])),
            options: Some(HashMap::from([
                // The app's own containers may talk to each other (web to worker).
                (
                    "com.docker.network.bridge.enable_icc".to_string(),
                    "true".to_string(),
                ),
                (
                    "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                    "true".to_string(),
                ),
            ])),
            ..Default::default()
        })
        .await?;
    if !isolated(&created.id).await {
        let _ = docker.remove_network(&name).await;
        return Err(NetworkError::NotIsolated(name));
    }
    sweep().await;
    if let Err(error) = guard(&bridge_of(&created.id)).await {
        let _ = docker.remove_network(&name).await;
        unguard(&bridge_of(&created.id)).await;
        return Err(NetworkError::Guard {
            network: name,
            error,
        });
    }
    tracing::info!(network = %name, "app network created");
    Ok(name)
}

/// The network named `name` on this engine, or `None` when there is none.
async fn inspect(
    docker: &bollard::Docker,
    name: &str,
) -> Result<Option<bollard::models::NetworkInspect>, NetworkError> {
    match docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(n) => Ok(Some(n)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether Docker's isolation chain drops traffic into the bridge of network `id`
/// (`br-<first 12 of the id>`), as it does when dockerd manages iptables. Asked up to three
/// times: listing the rules can fail while Docker is changing them for another network.
async fn isolated(id: &str) -> bool {
    let bridge = format!("-o {} ", bridge_of(id));
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let out = tokio::process::Command::new("iptables")
            .args(["-w", "-S", "DOCKER-ISOLATION-STAGE-2"])
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {
                if String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.contains(&bridge) && l.ends_with("-j DROP"))
                {
                    return true;
                }
                last = format!("no rule for {}", bridge.trim());
            }
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => last = format!("cannot run iptables: {e}"),
        }
    }
    tracing::warn!(network = id, "isolation rules not found: {last}");
    false
}

/// The Linux bridge of the Docker bridge network with this id.
fn bridge_of(id: &str) -> String {
    format!("br-{}", &id[..id.len().min(12)])
}

/// Our chains (see the module docs): the first sends what enters from an app bridge and
/// leaves by another interface to the second, which drops it when that interface is an app
/// bridge.
const GUARD_FROM: &str = "MAGRATHEA-ISOLATION-1";
const GUARD_TO: &str = "MAGRATHEA-ISOLATION-2";

/// `iptables -w -t mangle ARGS`; the error is what iptables printed.
async fn mangle(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("iptables")
        .args(["-w", "-t", "mangle"])
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

/// Adds `rule` to `chain` unless it is there (at the top when `first`).
async fn ensure_rule(chain: &str, rule: &[&str], first: bool) -> Result<(), String> {
    if mangle(&[&["-C", chain], rule].concat()).await.is_ok() {
        return Ok(());
    }
    let op = if first { "-I" } else { "-A" };
    mangle(&[&[op, chain], rule].concat()).await
}

/// Puts `bridge` under our isolation rules; idempotent, and safe against another process
/// on this host doing the same at once (a rule added twice is harmless).
async fn guard(bridge: &str) -> Result<(), String> {
    for chain in [GUARD_FROM, GUARD_TO] {
        if mangle(&["-S", chain]).await.is_err() {
            // Another process may create it between the two calls: only the check counts.
            let _ = mangle(&["-N", chain]).await;
            mangle(&["-S", chain]).await?;
        }
    }
    ensure_rule("FORWARD", &["-j", GUARD_FROM], true).await?;
    ensure_rule(
        GUARD_FROM,
        &["-i", bridge, "!", "-o", bridge, "-j", GUARD_TO],
        false,
    )
    .await?;
    ensure_rule(GUARD_TO, &["-o", bridge, "-j", "DROP"], false).await
}

/// Removes the rules of bridges gone from this network namespace (networks removed by
/// hand or by an older version); `/proc/self/net/dev` lists this process's namespace's.
async fn sweep() {
    let Ok(dev) = std::fs::read_to_string("/proc/self/net/dev") else {
        return;
    };
    let live: Vec<&str> = dev
        .lines()
        .filter_map(|l| Some(l.split_once(':')?.0.trim()))
        .collect();
    let Ok(out) = tokio::process::Command::new("iptables")
        .args(["-w", "-t", "mangle", "-S", GUARD_TO])
        .output()
        .await
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace().skip_while(|w| *w != "-o");
        if let Some(bridge) = words.nth(1) {
            if !live.contains(&bridge) {
                unguard(bridge).await;
            }
        }
    }
}

/// Removes `bridge`'s rules (every copy); the chains stay for the other networks.
async fn unguard(bridge: &str) {
    for (chain, rule) in [
        (
            GUARD_FROM,
            &["-i", bridge, "!", "-o", bridge, "-j", GUARD_TO][..],
        ),
        (GUARD_TO, &["-o", bridge, "-j", "DROP"][..]),
    ] {
        while mangle(&[&["-D", chain], rule].concat()).await.is_ok() {}
    }
}

/// The network a build of the app joins: its own (`mode` "app", the default: package
/// registries reachable, no other app), or none at all (`mode` "none").
pub async fn build_network(
    docker: &bollard::Docker,
    instance: &str,
    uid: u32,
    mode: &str,
) -> Result<String, NetworkError> {
    match mode {
        "none" => Ok("none".into()),
        _ => ensure_network(docker, instance, uid).await,
    }
}

/// On a Docker Swarm, the overlay network of an app environment (`shop`, `shop.staging`)
/// whose app has uid `uid`: by uid, so a later app of the same name never shares it. The
/// tasks of the environment are alone on it, with its release commands and `run`
/// containers (it is attachable); overlays are separate networks, so no other app's
/// process reaches them by address.
pub fn overlay_name(app: &str, uid: u32) -> String {
    let env = app.split_once('.').map_or("production", |(_, e)| e);
    format!("mg-u{uid}-{env}")
}

/// The overlay network `overlay_name(app, uid)` on the swarm this engine manages (or, on a
/// worker, as a manager made it), created if missing.
pub async fn ensure_overlay(
    docker: &bollard::Docker,
    app: &str,
    uid: u32,
) -> Result<String, NetworkError> {
    let name = overlay_name(app, uid);
    let _one = NETWORKS.lock().await;
    if inspect(docker, &name).await?.is_some() {
        return Ok(name);
    }
    docker
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(HashMap::from([
                ("magrathea.swarm".to_string(), "1".to_string()),
                ("magrathea.app".to_string(), app.to_string()),
                ("magrathea.uid".to_string(), uid.to_string()),
            ])),
            ..Default::default()
        })
        .await?;
    tracing::info!(network = %name, "app overlay network created");
    Ok(name)
}

/// Removes the app's network on this Docker host if nothing uses it any more.
pub async fn remove_network(docker: &bollard::Docker, instance: &str, uid: u32) {
    let name = network_name(instance, uid);
    let _one = NETWORKS.lock().await;
    let id = match inspect(docker, &name).await {
        Ok(Some(n)) => n.id.unwrap_or_default(),
        Ok(None) => return,
        Err(e) => return tracing::debug!(network = %name, "not removed: {e}"),
    };
    match docker.remove_network(&id).await {
        Ok(()) => {
            unguard(&bridge_of(&id)).await;
            tracing::info!(network = %name, "app network removed")
        }
        Err(e) => tracing::debug!(network = %name, "not removed: {e}"),
    }
}

/// Gives a tree to `uid` (owner and group), links included but never followed: what a
/// build writes (its source, env, meta dirs) must be the build's.
pub fn chown_tree(root: &Path, uid: u32) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(uid))?;
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

/// Readies a build's dirs for a build running as `uid`: the per-build ones (`src`, `env`,
/// `meta`, fresh from the export) are given to it; the app's cache is kept if it is the
/// uid's already, else emptied (a cache is only an accelerator, and one of another uid is
/// from an earlier app of the same name, or from before per-app uids) and given to it.
pub fn give_build_dirs(dirs: &[&Path], cache: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for d in dirs {
        chown_tree(d, uid)?;
    }
    match std::fs::symlink_metadata(cache) {
        Ok(m) if m.is_dir() && m.uid() == uid => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(cache)?,
        Ok(_) => std::fs::remove_file(cache)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(cache)?;
    std::os::unix::fs::chown(cache, Some(uid), Some(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_range_and_subuid() {
        assert!(check_uid(0).is_err());
        assert!(check_uid(1000).is_err());
        assert!(check_uid(UID_BASE).is_err());
        assert!(check_uid(UID_MAX + 1).is_err());
        assert!(check_uid(UID_BASE + 1).is_ok());
        let subuid = "alice:100000:65536\nbob:1900000000:1000\n";
        assert_eq!(subordinate_owner(subuid, 100000).as_deref(), Some("alice"));
        assert_eq!(subordinate_owner(subuid, 165536), None);
        assert_eq!(
            subordinate_owner(subuid, UID_BASE + 5).as_deref(),
            Some("bob")
        );
        assert_eq!(subordinate_owner("garbage\n::\n", 5), None);
        assert_eq!(host_account(0).as_deref(), Some("root"));
    }
}
