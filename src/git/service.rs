//! Spawning the real `git receive-pack` / `git upload-pack` for one SSH exec.

use std::path::Path;
use std::process::Stdio;

/// Which git service an SSH exec asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitService {
    ReceivePack,
    UploadPack,
}

impl GitService {
    pub fn as_str(self) -> &'static str {
        match self {
            GitService::ReceivePack => "receive-pack",
            GitService::UploadPack => "upload-pack",
        }
    }
}

use tokio::process::{Child, Command};

/// What the hook needs to find its way back to the controller.
pub struct HookEnv<'a> {
    pub socket: &'a Path,
    pub push_id: &'a str,
    pub token: &'a str,
    pub bin: &'a Path,
}

pub fn spawn(
    svc: GitService,
    repo: &Path,
    hooks_dir: &Path,
    git_protocol: Option<&str>,
    hook: Option<HookEnv<'_>>,
) -> std::io::Result<Child> {
    if !hooks_dir.is_absolute() || !repo.is_absolute() {
        // git would silently skip a hook it cannot find; never run a push without ours.
        return Err(std::io::Error::other(
            "hooks and repository paths must be absolute",
        ));
    }
    let mut cmd = Command::new("git");
    cmd.arg("-c")
        .arg(format!("core.hooksPath={}", hooks_dir.display()))
        .args(["-c", "receive.advertisePushOptions=true"])
        .arg(svc.as_str())
        .arg(repo)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so cancelling a push also stops the hook it runs.
        .process_group(0);
    if let Some(p) = git_protocol {
        cmd.env("GIT_PROTOCOL", p);
    }
    if let Some(h) = hook {
        cmd.env("MAGRATHEA_HOOK_SOCKET", h.socket)
            .env("MAGRATHEA_PUSH_ID", h.push_id)
            .env("MAGRATHEA_PUSH_TOKEN", h.token)
            .env("MAGRATHEA_BIN", h.bin);
    }
    cmd.spawn()
}
