//! What a process type of a release is on a swarm: one service from the stack's run image,
//! running the generic runner below, with the release's config in a Swarm secret.
//!
//! Each app environment has an overlay network of its own (`isolation::overlay_name`: the app's
//! uid and the environment): its tasks are alone on it, as an app's containers are alone on its
//! bridge on a node, so no other app's process reaches them by address. Every task listens
//! on [`APP_PORT`] in its own network namespace; a web service publishes that port in host
//! mode with no fixed number, so each task gets a port of its own on its node's address
//! (Swarm's `PortStatus`), which is where the health check and the router reach it.
use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, HealthConfig, Limit, Mount, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};

use crate::agent::error::AgentError;
use crate::agent::runtime::launcher_script;

pub const L_MANAGED: &str = "magrathea.swarm";
pub const L_APP: &str = "magrathea.app";
pub const L_RELEASE: &str = "magrathea.release";
pub const L_PROCESS: &str = "magrathea.process";
pub const L_GENERATION: &str = "magrathea.generation";
/// Services made before app networks listened on `port base + slot` of their node.
pub const L_PORT_BASE: &str = "magrathea.port-base";
pub const L_ONEOFF: &str = "magrathea.oneoff";

/// The port every task's process listens on (`PORT`), in the task's own network namespace.
pub const APP_PORT: u16 = 5000;

/// Where the release's secret appears in each task (a tmpfs Swarm mounts; root-only
/// elsewhere).
const SECRET_FILE: &str = "magrathea-env";

/// The runner, `sh` from the stack image: the release tarball fetched by URL with the
/// token from the secret, its sha256 checked before anything of it is unpacked (a
/// wrong answer is refused: exit 70, the task fails), unpacked into `/app` (a tmpfs), then
/// the process type started as on an SSH node (`PORT`, `DYNO`, the `.profile.d` launcher).
pub const RUNNER: &str = r#"set -eu
. "/run/secrets/magrathea-env"
t=/tmp/.magrathea-release.tar.gz
if command -v curl >/dev/null 2>&1; then
  curl -fsS -H "Authorization: Bearer $MAGRATHEA_TOKEN" -o "$t" "$MAGRATHEA_RELEASE_URL"
else
  wget -q --header "Authorization: Bearer $MAGRATHEA_TOKEN" -O "$t" "$MAGRATHEA_RELEASE_URL"
fi
unset MAGRATHEA_TOKEN
if ! echo "$MAGRATHEA_SHA256  $t" | sha256sum -c - >/dev/null 2>&1; then
  echo "magrathea runner: the release tarball from $MAGRATHEA_RELEASE_URL does not match its sha256 $MAGRATHEA_SHA256: refused" >&2
  rm -f "$t"
  exit 70
fi
tar -xzf "$t" -C /app --strip-components=1
rm -f "$t"
n=${MAGRATHEA_SLOT:-1}
export PORT=$MAGRATHEA_PORT DYNO="$MAGRATHEA_TYPE.$n" MAGRATHEA_PROCESS="$MAGRATHEA_TYPE.$n"
cd /app
exec /bin/sh -c "$MAGRATHEA_LAUNCH"
"#;

/// Swarm's own health check of a web task (the agent's HTTP check decides a deploy; this
/// one keeps watching after it): GET `$MAGRATHEA_HEALTH_PATH` on the task's port, healthy
/// when it answers below 500, with curl or busybox wget, whichever the stack has (the
/// check's own timeout bounds it: busybox 1.35's `wget -T` crashes).
pub const HEALTH: &str = r#"p=$MAGRATHEA_PORT
u="http://127.0.0.1:$p${MAGRATHEA_HEALTH_PATH:-/}"
if command -v curl >/dev/null 2>&1; then
  curl -s -m 5 -o /dev/null -w '%{http_code}' "$u" | grep -q '^[1-4]'
else
  o=$(wget -q -O /dev/null "$u" 2>&1) || echo "$o" | grep -q 'error: HTTP/1.. [1-4]'
fi"#;

/// One service to create.
pub struct Spec<'a> {
    /// The node app (`shop`, `shop.staging`).
    pub app: &'a str,
    pub release: &'a str,
    pub sha256: &'a str,
    pub ptype: &'a str,
    pub command: &'a str,
    pub replicas: u32,
    pub image: &'a str,
    pub memory: i64,
    pub cpu: f64,
    pub uid: u32,
    pub generation: u64,
    /// The app environment's overlay network.
    pub network: String,
    /// The release tarball's URL on the endpoint.
    pub url: String,
    /// The release's secret (config and the fetch token), by name and id.
    pub secret: (String, String),
    pub placement: &'a [String],
    /// Restart on failure (processes); a one-off runs once.
    pub oneoff: bool,
    /// A web process's health check path and how long it may take to boot.
    pub health: Option<(&'a str, u64)>,
}

/// The service's name: `mg-<app>-<release>-<type>-g<generation>`, dots made dashes, or a
/// digest of it where that is longer than Swarm's 63 characters.
pub fn service_name(app: &str, release: &str, ptype: &str, generation: u64) -> String {
    let n = format!(
        "mg-{}-{release}-{ptype}-g{generation}",
        app.replace('.', "-")
    );
    if n.len() <= 63 {
        return n;
    }
    use sha2::Digest;
    let h = hex::encode(&sha2::Sha256::digest(n.as_bytes())[..8]);
    format!("mg-{h}-{ptype}").chars().take(63).collect()
}

/// The secret of a release and generation: its config and its tarball's token, as a file
/// the runner sources (`export K='v'` lines).
pub fn secret_data(env: &BTreeMap<String, String>, token: &str) -> String {
    let mut out = String::new();
    for (k, v) in env {
        out.push_str(&format!("export {k}='{}'\n", v.replace('\'', r#"'\''"#)));
    }
    out.push_str(&format!("export MAGRATHEA_TOKEN='{token}'\n"));
    out
}

/// The process's environment as a plain service variable may hold it: the dyno's names,
/// never config values (those are in the secret).
fn plain_env(s: &Spec<'_>) -> Vec<String> {
    let (app, env) = s.app.split_once('.').unwrap_or((s.app, "production"));
    let health = s
        .health
        .map(|(path, _)| format!("MAGRATHEA_HEALTH_PATH={path}"));
    let mut out = vec![
        "HOME=/app".into(),
        "DATA_DIR=/data".into(),
        format!("MAGRATHEA_APP={app}"),
        format!("MAGRATHEA_ENV={env}"),
        format!("MAGRATHEA_RELEASE={}", s.release),
        format!("MAGRATHEA_TYPE={}", s.ptype),
        format!("MAGRATHEA_CMD={}", s.command),
        format!("MAGRATHEA_LAUNCH={}", launcher_script()),
        format!("MAGRATHEA_PORT={APP_PORT}"),
        format!("MAGRATHEA_RELEASE_URL={}", s.url),
        format!("MAGRATHEA_SHA256={}", s.sha256),
        "MAGRATHEA_SLOT={{.Task.Slot}}".into(),
    ];
    out.extend(health);
    out
}

pub fn labels(s: &Spec<'_>) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (L_MANAGED.into(), "1".into()),
        (L_APP.into(), s.app.into()),
        (L_RELEASE.into(), s.release.into()),
        (L_PROCESS.into(), s.ptype.into()),
        (L_GENERATION.into(), s.generation.to_string()),
    ]);
    if s.oneoff {
        l.insert(L_ONEOFF.into(), "1".into());
    }
    l
}

/// `/app`: a tmpfs of the app's uid (the runner unpacks the release into it), as an
/// anonymous `local` volume: Swarm's own tmpfs mounts ignore their mode, so a process that
/// is not root could not write them.
fn app_mount(s: &Spec<'_>) -> Mount {
    let o = format!("uid={0},gid={0},mode=0700,size={1}", s.uid, s.memory);
    Mount {
        target: Some("/app".into()),
        typ: Some(MountType::VOLUME),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some("local".into()),
                options: Some(HashMap::from([
                    ("type".to_string(), "tmpfs".to_string()),
                    ("device".to_string(), "tmpfs".to_string()),
                    ("o".to_string(), o),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn spec(s: &Spec<'_>) -> Result<ServiceSpec, AgentError> {
    if s.memory <= 0 || !(0.0..=1024.0).contains(&s.cpu) {
        return Err(AgentError::Invalid(format!(
            "memory must be positive and cpu 0 to 1024 (got {} and {})",
            s.memory, s.cpu
        )));
    }
    crate::isolation::check_uid(s.uid).map_err(|e| AgentError::Invalid(e.to_string()))?;
    let container = TaskSpecContainerSpec {
        image: Some(s.image.to_string()),
        labels: Some(labels(s)),
        command: Some(vec!["/bin/sh".into(), "-c".into(), RUNNER.into()]),
        env: Some(plain_env(s)),
        user: Some(format!("{}:{}", s.uid, s.uid)),
        // The node's name, as a process on a node sees it.
        hostname: Some("{{.Node.Hostname}}".into()),
        mounts: Some(vec![app_mount(s)]),
        secrets: Some(vec![TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(SECRET_FILE.into()),
                uid: Some(s.uid.to_string()),
                gid: Some(s.uid.to_string()),
                mode: Some(0o400),
            }),
            secret_name: Some(s.secret.0.clone()),
            secret_id: Some(s.secret.1.clone()),
        }]),
        capability_drop: Some(vec!["ALL".into()]),
        health_check: s.health.map(|(_, boot_ms)| HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), HEALTH.into()]),
            interval: Some(1_000_000_000),
            timeout: Some(6_000_000_000),
            retries: Some(3),
            start_period: Some(boot_ms as i64 * 1_000_000),
            ..Default::default()
        }),
        // docker-init as PID 1, as on a node: it forwards SIGTERM (a shell or app as PID 1
        // would ignore it and be killed only at the end of the grace period).
        init: Some(true),
        stop_grace_period: Some(10_000_000_000),
        ..Default::default()
    };
    let restart = if s.oneoff {
        TaskSpecRestartPolicyConditionEnum::NONE
    } else {
        TaskSpecRestartPolicyConditionEnum::ANY
    };
    let cpus = (s.cpu * 1e9) as i64;
    Ok(ServiceSpec {
        name: Some(service_name(s.app, s.release, s.ptype, s.generation)),
        labels: Some(labels(s)),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: Some(s.memory),
                    nano_cpus: (cpus > 0).then_some(cpus),
                    pids: Some(crate::isolation::PROCESS_PIDS),
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(restart),
                delay: Some(1_000_000_000),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(s.placement.to_vec()),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(s.network.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        // A web task's port on its node, a free one picked by Docker per task.
        endpoint_spec: (s.ptype == "web" && !s.oneoff).then(|| EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(APP_PORT as i64),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(s.replicas as i64),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Standard base64 with padding (Swarm takes secret data so).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A placement constraint as `magrathea.yml` may give it: `node.labels.K==V` or
/// `node.labels.K!=V`, with K and V plain words (no other Swarm expression is passed on).
pub fn check_constraint(c: &str) -> Result<(), AgentError> {
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 64
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let ok = c.strip_prefix("node.labels.").is_some_and(|rest| {
        let (k, v) = rest
            .split_once("==")
            .or_else(|| rest.split_once("!="))
            .unwrap_or(("", ""));
        word(k) && word(v)
    });
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "placement constraint {:?}: expected node.labels.KEY==VALUE or !=",
            c.chars().take(80).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_swarm() {
        assert_eq!(
            service_name("shop.staging", "v3-0123456789ab", "web", 7),
            "mg-shop-staging-v3-0123456789ab-web-g7"
        );
        let long = service_name(&"a".repeat(40), "v3-0123456789ab", "worker", 123456);
        assert!(long.len() <= 63 && long.starts_with("mg-"), "{long}");
    }

    #[test]
    fn config_values_are_quoted_for_sh() {
        let env = BTreeMap::from([("A".to_string(), "it's $HOME `x`".to_string())]);
        let d = secret_data(&env, "t0k");
        assert_eq!(
            d,
            "export A='it'\\''s $HOME `x`'\nexport MAGRATHEA_TOKEN='t0k'\n"
        );
    }

    #[test]
    fn base64_is_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar\n"), "Zm9vYmFyCg==");
    }

    #[test]
    fn constraints_are_plain_label_comparisons() {
        check_constraint("node.labels.zone==eu-1").unwrap();
        check_constraint("node.labels.gpu!=yes").unwrap();
        for bad in [
            "node.role==manager",
            "node.labels.a==b c",
            "node.labels.==x",
            "x",
        ] {
            assert!(check_constraint(bad).is_err(), "{bad}");
        }
    }
}
