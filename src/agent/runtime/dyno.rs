//! What a process container is: the dyno environment (`PORT`, `DYNO`, the `.profile.d`
//! launcher), the spec checked, its labels, the `/app` overlay and `/data` mounts, the
//! confinement and the published port.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, PortBinding, RestartPolicy,
};

use crate::agent::error::AgentError;
use crate::agent::layout::{check_release, NodeRoot};
use crate::names;

use super::{ProcessSpec, Scratch, L_APP, L_GENERATION, L_INDEX, L_INSTANCE, L_PROCESS, L_RELEASE};

/// The shell every process, release command and one-off runs in: bash, as on Heroku
/// (buildpacks' `.profile.d` scripts are bash), or `sh` on a stack without bash.
/// `$0` of the inner script is that shell.
pub(super) const PICK_SHELL: &str =
    "if command -v bash >/dev/null 2>&1; then s=bash; else s=sh; fi; exec \"$s\" -c";

/// Sources the buildpacks' `.profile.d/*.sh`, then the app's own `.profile` (Heroku's
/// order), from `/app`.
pub(super) const PROFILE: &str =
    "for f in /app/.profile.d/*.sh; do [ -f \"$f\" ] && . \"$f\"; done; unset f; \
                       [ -f /app/.profile ] && . /app/.profile; ";

/// A Procfile or release command: it comes in `$MAGRATHEA_CMD`, so it is never spliced into
/// this string; only the innermost `bash -c` parses it, exactly as written.
pub(super) fn launcher() -> Vec<String> {
    let inner = format!("{PROFILE}exec \"$0\" -c \"$MAGRATHEA_CMD\"");
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{PICK_SHELL} '{inner}' \"$s\""),
    ]
}

/// The launcher's `sh -c` script (for the swarm runner, which starts it the same way).
pub fn launcher_script() -> String {
    launcher().swap_remove(2)
}

/// An argv (`run`, `shell`): the launcher, then the argv as its arguments (`"$@"`, never
/// parsed again).
pub fn argv_launcher(name: &str, argv: &[String]) -> Vec<String> {
    let inner = format!("{PROFILE}exec \"$@\"");
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{PICK_SHELL} '{inner}' {name} \"$@\""),
        name.to_string(),
    ];
    cmd.extend(argv.iter().cloned());
    cmd
}

/// Checks the spec and readies the files: returns (release's `app/` dir, data dir), both
/// absolute, as Docker bind mounts need.
pub(super) fn prepare(
    root: &NodeRoot,
    spec: &ProcessSpec,
) -> Result<(PathBuf, PathBuf), AgentError> {
    check_instance(&spec.instance)?;
    names::check_node_app(&spec.app)?;
    check_release(&spec.release)?;
    names::check("process type", &spec.ptype)?;
    if spec.command.trim().is_empty() || spec.command.contains('\0') {
        return Err(AgentError::Invalid(format!(
            "{}: the command is empty or holds a NUL byte",
            spec.ptype
        )));
    }
    if !(0.0..=1024.0).contains(&spec.cpu) {
        return Err(AgentError::Invalid(format!(
            "cpu limit must be 0 (none) to 1024, got {}",
            spec.cpu
        )));
    }
    if spec.memory <= 0 {
        return Err(AgentError::Invalid(format!(
            "memory limit must be positive, got {}",
            spec.memory
        )));
    }
    if !root.has_release(&spec.app, &spec.release) {
        return Err(AgentError::NoRelease {
            app: spec.app.clone(),
            name: spec.release.clone(),
        });
    }
    let app_dir = root.release_dir(&spec.app, &spec.release).join("app");
    // A real directory: a symlink named `app` would mount some other part of the release.
    let is_dir = std::fs::symlink_metadata(&app_dir)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if !is_dir {
        return Err(AgentError::BadRelease {
            app: spec.app.clone(),
            name: spec.release.clone(),
            reason: "it has no app/ directory".into(),
        });
    }
    crate::isolation::check_uid(spec.uid).map_err(|e| AgentError::Invalid(e.to_string()))?;
    root.own_release(&spec.app, &spec.release, spec.uid)?;
    let data_dir = root.ensure_data_dir(&spec.app, spec.uid)?;
    let abs =
        |p: PathBuf| std::path::absolute(&p).map_err(|source| AgentError::Io { path: p, source });
    Ok((abs(app_dir)?, abs(data_dir)?))
}

/// Instance ids are hex digests or names: 1-40 of `[a-z0-9-]`, not starting with '-'.
/// They go into container names and label filters.
pub(super) fn check_instance(id: &str) -> Result<(), AgentError> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "invalid node instance id {:?}: use 1-40 characters a-z, 0-9 and '-'",
            id.chars()
                .filter(|c| !c.is_control())
                .take(60)
                .collect::<String>()
        )))
    }
}

pub(super) fn is_reserved(key: &str) -> bool {
    matches!(key, "PORT" | "HOME" | "DATA_DIR" | "DYNO") || key.starts_with("MAGRATHEA_")
}

/// Config vars first, then ours. Everything but `PORT` (the caller adds it if any).
pub(super) fn env(spec: &ProcessSpec) -> Result<Vec<String>, AgentError> {
    let mut out = Vec::with_capacity(spec.env.len() + 6);
    for (k, v) in &spec.env {
        let key_ok = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(AgentError::Invalid(format!(
                "config var name {:?} is not a valid environment variable name \
                 (letters, digits and '_', not starting with a digit)",
                k.chars()
                    .filter(|c| !c.is_control())
                    .take(60)
                    .collect::<String>()
            )));
        }
        if is_reserved(k) {
            return Err(AgentError::Invalid(format!(
                "config var {k} is set by magrathea and cannot be overridden; unset it"
            )));
        }
        if v.contains('\0') {
            return Err(AgentError::Invalid(format!(
                "config var {k} holds a NUL byte"
            )));
        }
        out.push(format!("{k}={v}"));
    }
    // `shop.staging` on the node: the app and its environment, as the app knows them.
    let (app, env) = spec
        .app
        .split_once('.')
        .unwrap_or((&spec.app, "production"));
    out.extend([
        "HOME=/app".to_string(),
        "DATA_DIR=/data".to_string(),
        // Heroku's name for the process: web.1, worker.2, run.1, release.1.
        format!("DYNO={}.{}", spec.ptype, spec.index),
        format!("MAGRATHEA_APP={app}"),
        format!("MAGRATHEA_ENV={env}"),
        format!("MAGRATHEA_RELEASE={}", spec.release),
        format!("MAGRATHEA_PROCESS={}.{}", spec.ptype, spec.index),
        format!("MAGRATHEA_CMD={}", spec.command),
    ]);
    Ok(out)
}

pub(super) fn labels(spec: &ProcessSpec) -> HashMap<String, String> {
    HashMap::from([
        (L_INSTANCE.into(), spec.instance.clone()),
        (L_APP.into(), spec.app.clone()),
        (L_RELEASE.into(), spec.release.clone()),
        (L_PROCESS.into(), spec.ptype.clone()),
        (L_INDEX.into(), spec.index.to_string()),
        (L_GENERATION.into(), spec.generation.to_string()),
    ])
}

/// The `/app` mount: an anonymous `local` volume of type overlay (see [`Scratch`]). The
/// paths go into a comma- and colon-separated option string, so those are refused.
pub(super) fn app_mount(app_dir: &Path, scratch: &Scratch) -> Result<Mount, AgentError> {
    let paths = [app_dir.to_path_buf(), scratch.upper(), scratch.work()];
    let mut s = vec![];
    for p in &paths {
        let t = p.to_str().filter(|t| {
            !t.contains([',', ':', '\\']) && !t.chars().any(|c| c.is_control() || c == ' ')
        });
        match t {
            Some(t) => s.push(t.to_string()),
            None => {
                return Err(AgentError::Invalid(format!(
                    "{}: the node's root path must not hold ',', ':', '\\', spaces or control \
                     characters (it goes into an overlay mount's options)",
                    p.display()
                )))
            }
        }
    }
    Ok(Mount {
        typ: Some(MountType::VOLUME),
        target: Some("/app".into()),
        read_only: Some(false),
        volume_options: Some(MountVolumeOptions {
            // Never copy the image's /app into it: the release is the content.
            no_copy: Some(true),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some("local".into()),
                options: Some(HashMap::from([
                    ("type".to_string(), "overlay".to_string()),
                    ("device".to_string(), "overlay".to_string()),
                    (
                        "o".to_string(),
                        format!("lowerdir={},upperdir={},workdir={}", s[0], s[1], s[2]),
                    ),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(super) fn container_body(
    spec: &ProcessSpec,
    app_dir: &Path,
    data_dir: &Path,
    scratch: &Scratch,
    env: Vec<String>,
    labels: HashMap<String, String>,
    restart: RestartPolicy,
) -> Result<ContainerCreateBody, AgentError> {
    let app = app_mount(app_dir, scratch)?;
    // Capped json-file logs: a chatty app must not fill the node's disk.
    let log_config = HostConfigLogConfig {
        typ: Some("json-file".into()),
        config: Some(HashMap::from([
            ("max-size".to_string(), "10m".to_string()),
            ("max-file".to_string(), "3".to_string()),
        ])),
    };
    let mut body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(launcher()),
        env: Some(env),
        working_dir: Some("/app".into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            mounts: Some(vec![
                app,
                crate::docker::bind_mount(data_dir, "/data", false),
            ]),
            // The app's own network (see `isolation`): no other app's ports or traffic.
            network_mode: Some(super::network_of(spec)),
            memory: Some(spec.memory),
            memory_swap: Some(spec.memory),
            nano_cpus: (spec.cpu > 0.0).then_some((spec.cpu * 1e9) as i64),
            // docker-init as PID 1: it forwards SIGTERM (a shell or app as PID 1 would
            // ignore it, making every stop wait out the grace period) and reaps zombies.
            init: Some(true),
            restart_policy: Some(restart),
            log_config: Some(log_config),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The app's own uid, no capabilities, no-new-privileges, a pids limit.
    crate::isolation::confine_body(&mut body, spec.uid, crate::isolation::PROCESS_PIDS);
    Ok(body)
}

/// Publishes the process's `port` (the same number inside, as `PORT`) on loopback and on
/// `ip` when that is another address.
pub(super) fn publish(body: &mut ContainerCreateBody, port: u16, ip: Option<std::net::IpAddr>) {
    let key = format!("{port}/tcp");
    let mut ips = vec!["127.0.0.1".to_string()];
    if let Some(ip) = ip.filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
        ips.push(ip.to_string());
    }
    let bindings = ips
        .into_iter()
        .map(|ip| PortBinding {
            host_ip: Some(ip),
            host_port: Some(port.to_string()),
        })
        .collect();
    body.exposed_ports = Some(vec![key.clone()]);
    if let Some(host) = body.host_config.as_mut() {
        host.port_bindings = Some(HashMap::from([(key, Some(bindings))]));
    }
}

#[cfg(test)]
mod tests {
    use super::super::container_name;
    use super::*;

    fn spec() -> ProcessSpec {
        ProcessSpec {
            instance: "0a1b2c3d".into(),
            app: "shop".into(),
            release: "v3-0123456789ab".into(),
            ptype: "web".into(),
            index: 1,
            command: "echo 'a b' && exit 3".into(),
            env: vec![("LOG_LEVEL".into(), "warn x=y".into())],
            image: "magrathea/stack-tiny:latest".into(),
            memory: 64 << 20,
            cpu: 0.0,
            generation: 0,
            uid: crate::isolation::UID_BASE + 1,
            publish_ip: None,
        }
    }

    #[test]
    fn names_and_env() {
        let s = spec();
        assert_eq!(container_name(&s), "mg-0a1b2c3d-shop-v3-0123456789ab-web-1");
        let g = ProcessSpec {
            generation: 7,
            ..spec()
        };
        assert_eq!(
            container_name(&g),
            "mg-0a1b2c3d-shop-v3-0123456789ab-web-1-g7"
        );
        let e = env(&s).unwrap();
        assert_eq!(e[0], "LOG_LEVEL=warn x=y");
        assert!(e.contains(&"MAGRATHEA_PROCESS=web.1".to_string()));
        assert!(e.contains(&"MAGRATHEA_CMD=echo 'a b' && exit 3".to_string()));
        for bad in ["PORT", "MAGRATHEA_CMD", "1X", "A-B", "", "A=B"] {
            let mut s = spec();
            s.env = vec![(bad.into(), "v".into())];
            assert!(env(&s).is_err(), "{bad}");
        }
        assert!(check_instance("0a1b2c3d").is_ok());
        for bad in ["", "-x", "A", "a_b", "a/b", &"a".repeat(41)] {
            assert!(check_instance(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn web_ports_are_published_on_loopback_and_the_node_address() {
        let bindings = |ip: Option<&str>| {
            let mut body = ContainerCreateBody {
                host_config: Some(HostConfig::default()),
                ..Default::default()
            };
            publish(&mut body, 41234, ip.map(|i| i.parse().unwrap()));
            assert_eq!(body.exposed_ports, Some(vec!["41234/tcp".to_string()]));
            let map = body.host_config.unwrap().port_bindings.unwrap();
            map["41234/tcp"]
                .clone()
                .unwrap()
                .into_iter()
                .map(|b| {
                    assert_eq!(b.host_port.as_deref(), Some("41234"));
                    b.host_ip.unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(bindings(None), ["127.0.0.1"]);
        assert_eq!(bindings(Some("127.0.0.1")), ["127.0.0.1"]);
        assert_eq!(bindings(Some("0.0.0.0")), ["127.0.0.1"]);
        assert_eq!(bindings(Some("10.0.0.5")), ["127.0.0.1", "10.0.0.5"]);
        assert_eq!(bindings(Some("fd00::5")), ["127.0.0.1", "fd00::5"]);
    }
}
