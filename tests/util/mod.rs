//! Test harness in the style of ripgrep's `tests/util.rs`: the real `magrathea` binary, a
//! temp dir per test, the real `ssh` and `git` clients, and everything useful printed when
//! something fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// How long a started server or agent may take to say where it listens (a bound on a hang,
/// not a timing claim: one that exits fails at once).
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_magrathea"))
}

/// Fail loudly when a tool the suite needs is missing (never skip into a green run).
pub fn require(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "required tool '{tool}' is not installed; run scripts/setup.sh (or .ci/run)"
    );
}

pub struct Key {
    pub name: String,
    pub path: PathBuf,
}

impl Key {
    pub fn public(&self) -> String {
        std::fs::read_to_string(self.path.with_extension("pub")).unwrap()
    }
    pub fn pub_path(&self) -> PathBuf {
        self.path.with_extension("pub")
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub port: u16,
    pub http_port: u16,
    /// The router's HTTPS port, when started with `--https`.
    pub https_port: u16,
    pub admin: Key,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    flags: Vec<String>,
    /// The ssh port, held for the test's life: a restart binds it again, and while the
    /// server is down nothing else on the machine can take it (a client finds it refused).
    ssh_lease: PortLease,
}

pub fn keygen(dir: &Path, name: &str) -> Key {
    require("ssh-keygen");
    let path = dir.join(format!("{name}_key"));
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            &format!("{name}@test"),
            "-f",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Key {
        name: name.into(),
        path,
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// A server with extra `serve` flags.
    pub fn start_with(flags: &[&str]) -> Server {
        require("git");
        require("ssh");
        require_docker();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let admin = keygen(dir.path(), "admin");
        let out = run(Command::new(bin())
            .args(["init", "--data"])
            .arg(&data)
            .arg("--admin-key")
            .arg(admin.pub_path()));
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        let mut s = Server {
            dir,
            data,
            port: 0,
            http_port: 0,
            https_port: 0,
            admin,
            child: None,
            log: Arc::default(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ssh_lease: lease_port(),
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// Starts the server with extra environment variables (a failpoint, for one).
    pub fn spawn_with_env(&mut self, vars: &[(&str, &str)]) {
        // Tests build on the tiny stack unless they name another.
        let stack = if self.flags.iter().any(|f| f == "--default-stack") {
            &[][..]
        } else {
            &["--default-stack", "tiny"][..]
        };
        let listen = format!("127.0.0.1:{}", self.ssh_lease.port);
        let mut child = Command::new(bin())
            .args(["serve", "--listen", &listen, "--http", "127.0.0.1:0"])
            .args(stack)
            .arg("--data")
            .arg(&self.data)
            .args(&self.flags)
            .env("MAGRATHEA_LOG", "info,magrathea=debug")
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let (http_tx, http_rx) = std::sync::mpsc::channel();
        let (https_tx, https_rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("https listening on ") {
                    let port = addr.split_whitespace().next().unwrap().rsplit(':').next();
                    let _ = https_tx.send(port.unwrap().parse::<u16>().unwrap());
                }
                if let Some(addr) = line.strip_prefix("http listening on ") {
                    let port = addr
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .rsplit(':')
                        .next()
                        .unwrap();
                    let _ = http_tx.send(port.parse::<u16>().unwrap());
                }
                if let Some(addr) = line.strip_prefix("ssh listening on ") {
                    let _ = tx.send(addr.rsplit(':').next().unwrap().parse::<u16>().unwrap());
                }
                log.lock().unwrap().push_str(&format!("[out] {line}\n"));
            }
        });
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&format!("[err] {line}\n"));
            }
        });
        // Held before the waits: a server that never says where it listens is killed by
        // Drop, not left running.
        self.child = Some(child);
        // Bounds on a hang only: a server that exits closes its stdout and fails at once.
        // Starting talks to Docker (the built-in node, swept builds), which a loaded
        // machine answers slowly.
        self.port = rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("server did not start:\n{}", self.log.lock().unwrap()));
        self.http_port = http_rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("router did not start:\n{}", self.log.lock().unwrap()));
        if self.flags.iter().any(|f| f == "--https") {
            self.https_port = https_rx
                .recv_timeout(START_TIMEOUT)
                .unwrap_or_else(|_| panic!("https did not start:\n{}", self.log.lock().unwrap()));
        }
    }

    /// GET `path` from `app` through the router; (status, body).
    pub fn get(&self, app: &str, path: &str) -> (u16, String) {
        http_get(self.http_port, &format!("{app}.localhost"), path)
    }

    /// GET `path` from `app` through the router with curl; the response head, lowercased
    /// (status line and headers, CRLF kept).
    pub fn head(&self, app: &str, path: &str) -> String {
        let out = run(Command::new("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            &format!("Host: {app}.localhost"),
            &format!("http://127.0.0.1:{}{path}", self.http_port),
        ]));
        text(&out.stdout).to_lowercase()
    }

    /// SIGKILL and wait: the controller dies without warning.
    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server running");
        signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }

    /// Waits for the server to end by itself (a failpoint killed it, or after
    /// [`Server::terminate`]); its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        child.wait().unwrap()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        signal(child.id(), libc::SIGTERM);
        child.wait().unwrap()
    }

    /// SIGTERM without waiting: the controller shuts down gracefully while the test goes on
    /// ([`Server::wait_exit`] collects it).
    pub fn terminate(&self) {
        signal(
            self.child.as_ref().expect("server running").id(),
            libc::SIGTERM,
        );
    }

    /// The controller's instance id, as it labels its containers.
    pub fn instance(&self) -> String {
        use sha2::Digest;
        let p = std::fs::canonicalize(&self.data).unwrap();
        hex::encode(&sha2::Sha256::digest(p.as_os_str().as_encoded_bytes())[..4])
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn key(&self, name: &str) -> Key {
        keygen(self.dir.path(), name)
    }

    pub fn ssh_args(&self, key: &Key) -> Vec<String> {
        vec![
            "-i".into(),
            key.path.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-p".into(),
            self.port.to_string(),
        ]
    }

    /// `ssh -p PORT git@127.0.0.1 ARGS`, with `stdin` piped in.
    pub fn ssh(&self, key: &Key, args: &str, stdin: Option<&str>) -> Output {
        self.ssh_bytes(key, args, stdin.map(str::as_bytes))
    }

    /// [`Server::ssh`] with bytes on stdin (a dump).
    pub fn ssh_bytes(&self, key: &Key, args: &str, stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.args(self.ssh_args(key)).arg("git@127.0.0.1");
        if !args.is_empty() {
            cmd.arg(args);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            let mut sin = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                sin.write_all(s).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }

    /// Runs an ssh command that must succeed; returns stdout.
    pub fn ok(&self, key: &Key, args: &str) -> String {
        let out = self.ssh(key, args, None);
        assert!(
            out.status.success(),
            "ssh {args} failed ({:?})\nstdout: {}\nstderr: {}\nserver log:\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr),
            self.log()
        );
        text(&out.stdout)
    }

    pub fn git_ssh_command(&self, key: &Key) -> String {
        format!("ssh {}", self.ssh_args(key).join(" "))
    }

    pub fn url(&self, repo: &str) -> String {
        format!("ssh://git@127.0.0.1:{}/{repo}", self.port)
    }

    /// `git ARGS` in `dir` with this server's ssh command for `key`.
    pub fn git(&self, key: &Key, dir: &Path, args: &[&str]) -> Output {
        run(Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", self.git_ssh_command(key))
            .env("GIT_TERMINAL_PROMPT", "0"))
    }

    pub fn git_ok(&self, key: &Key, dir: &Path, args: &[&str]) -> Output {
        let out = self.git(key, dir, args);
        assert!(
            out.status.success(),
            "git {args:?} failed ({:?})\nstdout: {}\nstderr: {}\nserver log:\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr),
            self.log()
        );
        out
    }

    /// Adds a key over ssh as admin.
    pub fn add_key(&self, key: &Key, role: &str) {
        let out = self.ssh(
            &self.admin,
            &format!("keys:add {} --role {role}", key.name),
            Some(&key.public()),
        );
        assert!(out.status.success(), "keys:add: {}", text(&out.stderr));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
        // The built-in node's processes (as Agent's drop does for its own).
        remove_node_containers(&self.data.join("node"));
        // A build the killed controller left running, then the build networks.
        if let Ok(p) = std::fs::canonicalize(&self.data) {
            use sha2::Digest;
            let inst = hex::encode(&sha2::Sha256::digest(p.as_os_str().as_encoded_bytes())[..4]);
            let out = run(Command::new("docker").args([
                "ps",
                "-aq",
                "--filter",
                &format!("name=magrathea-{inst}-build-"),
            ]));
            for id in text(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
            remove_networks(&inst);
        }
    }
}

/// A node's instance id, as it labels and names its containers: the first 4 bytes of the
/// sha256 of its canonical root.
pub fn node_instance(root: &Path) -> Option<String> {
    use sha2::Digest;
    let p = std::fs::canonicalize(root).ok()?;
    Some(hex::encode(
        &sha2::Sha256::digest(p.as_os_str().as_encoded_bytes())[..4],
    ))
}

/// The ids of every container of the node with this root, running or not.
pub fn node_containers(root: &Path) -> Vec<String> {
    labelled_containers(root, &[])
}

/// The ids of the node's service containers (Postgres, Redis, ...), running or not.
pub fn service_containers(root: &Path) -> Vec<String> {
    labelled_containers(root, &["magrathea.service"])
}

/// The ids of the containers of the node with this root that carry every label of
/// `labels` (`key` or `key=value`), running or not.
pub fn labelled_containers(root: &Path, labels: &[&str]) -> Vec<String> {
    let Some(inst) = node_instance(root) else {
        return vec![];
    };
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-aq", "--filter"])
        .arg(format!("label=magrathea.instance={inst}"));
    for l in labels {
        cmd.args(["--filter", &format!("label={l}")]);
    }
    text(&run(&mut cmd).stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn remove_node_containers(root: &Path) {
    if let Some(inst) = node_instance(root) {
        remove_instance_containers(&inst);
    }
}

/// Every container and network of a node instance.
fn remove_instance_containers(inst: &str) {
    let out = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        &format!("label=magrathea.instance={inst}"),
    ]));
    for id in text(&out.stdout).split_whitespace() {
        // -v: a process's /app is an anonymous overlay volume.
        let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
    }
    remove_networks(inst);
}

/// The per-app networks an instance (a node, or a controller for its builds) made, once
/// nothing uses them.
/// Removed one by one: dockerd runs one prune at a time and refuses the others ("a prune
/// operation is already running"), which tests ending together hit.
pub fn remove_networks(instance: &str) {
    let out = run(Command::new("docker")
        .args(["network", "ls", "-q", "--filter"])
        .arg(format!("label=magrathea.instance={instance}")));
    for id in text(&out.stdout).split_whitespace() {
        let _ = Command::new("docker").args(["network", "rm", id]).output();
    }
}

/// OpenSSH to an agent at `addr` (`host:port`) with the private key `key`, no host key
/// check; the caller adds the destination and what to ask.
pub fn ssh_to_agent(addr: &str, key: &Path) -> Command {
    let port = addr.rsplit(':').next().unwrap();
    let mut c = Command::new("ssh");
    c.arg("-i").arg(key).args([
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-p",
        port,
    ]);
    c
}

/// kill(2) one process (never a group: a bad pid must not take anything else down).
pub fn signal(pid: u32, sig: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A local git repo whose first commit will be a minimal app that builds on the tiny stack
/// (a Procfile), so pushes to `main` and `v*` tags go through the real build pipeline.
pub fn repo(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    git_local(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(
        dir.join("Procfile"),
        "web: busybox httpd -f -p $PORT -h .\n",
    )
    .unwrap();
    dir.to_path_buf()
}

/// A repo holding a copy of `tests/fixtures/<name>`, committed.
pub fn fixture_repo(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::create_dir_all(dir).unwrap();
    let out = run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dir));
    assert!(
        out.status.success(),
        "cp fixture {name}: {}",
        text(&out.stderr)
    );
    git_local(dir, &["init", "-q", "-b", "main"]);
    git_local(dir, &["add", "-A"]);
    git_local(dir, &["commit", "-q", "-m", &format!("fixture {name}")]);
    dir.to_path_buf()
}

/// Docker must answer, with the tiny stack present (scripts/test.sh sets both up).
pub fn require_docker() {
    require("docker");
    let out = run(Command::new("docker").args(["image", "inspect", "magrathea/stack-tiny:latest"]));
    assert!(
        out.status.success(),
        "Docker engine or stack image magrathea/stack-tiny missing ({}); run scripts/docker-up.sh and scripts/stack-tiny.sh",
        text(&out.stderr).trim()
    );
}

pub fn git_local(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git")
        .args([
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=Test",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir));
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

pub fn commit(dir: &Path, file: &str, content: &str, msg: &str) -> String {
    let p = dir.join(file);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, content).unwrap();
    git_local(dir, &["add", "-A"]);
    git_local(dir, &["commit", "-q", "-m", msg]);
    git_local(dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// A WebSocket round trip on `stream` (plain or TLS) to `path`: handshake, one masked text
/// message, its echo (the payload of the first frame back), close.
pub fn ws_echo(
    mut stream: impl std::io::Read + Write,
    host: &str,
    path: &str,
    msg: &str,
) -> String {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    stream.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed in the handshake"
        );
        head.push(byte[0]);
    }
    let head = text(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // RFC 6455's own example key and answer: the app's handshake reached us intact.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | msg.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).unwrap();
    stream.flush().unwrap();
    let mut hdr = [0u8; 2];
    stream.read_exact(&mut hdr).unwrap();
    assert_eq!(hdr[0], 0x81, "a final text frame");
    let mut payload = vec![0u8; (hdr[1] & 0x7f) as usize];
    stream.read_exact(&mut payload).unwrap();
    stream.write_all(&[0x88, 0x80, 0, 0, 0, 0]).unwrap();
    text(&payload)
}

/// A minimal HTTP/1.0 GET: (status, body); status 0 when the connection fails.
pub fn http_get(port: u16, host: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .is_err()
    {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A `magrathea agent` process on a loopback port.
pub struct Agent {
    pub root: PathBuf,
    pub addr: String,
    key: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// Known once the agent runs: its root may be gone (a server's temp dir) when it drops.
    instance: Option<String>,
    /// The agent's port, held for the test's life: a restart binds it again, and nothing
    /// else on the machine may take it in between.
    _port: PortLease,
}

impl Agent {
    pub fn start(server: &Server, name: &str) -> Agent {
        let root = server.dir.path().join(format!("node-{name}"));
        let key = server.data.join("controller_ed25519.pub");
        let port = lease_port();
        let listen = format!("127.0.0.1:{}", port.port);
        let (child, addr, log) = Self::launch(&root, &key, &listen)
            .unwrap_or_else(|log| panic!("agent did not start:\n{log}"));
        let instance = node_instance(&root);
        Agent {
            root,
            addr,
            key,
            child: Some(child),
            log,
            instance,
            _port: port,
        }
    }

    /// Runs the agent until it says where it listens: (process, address, log), or its log
    /// when it did not start.
    fn launch(
        root: &Path,
        key: &Path,
        listen: &str,
    ) -> Result<(Child, String, Arc<Mutex<String>>), String> {
        let mut child = Command::new(bin())
            .args(["agent", "--listen", listen, "--root"])
            .arg(root)
            .arg("--controller-key")
            .arg(key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log: Arc<Mutex<String>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("agent listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                l.lock().unwrap().push_str(&format!("[out] {line}\n"));
            }
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                l.lock().unwrap().push_str(&format!("[err] {line}\n"));
            }
        });
        // A bound on a hang: an agent that exits closes its stdout and fails at once.
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => Ok((child, addr, log)),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = log.lock().unwrap().clone();
                Err(text)
            }
        }
    }

    /// The node comes back: same root (so the same host key and containers), same address.
    pub fn restart(&mut self) {
        self.kill();
        let old = std::mem::take(&mut *self.log.lock().unwrap());
        // The port is ours (leased); a retry only covers a socket the kernel has not let go
        // of yet.
        let t = std::time::Instant::now();
        loop {
            match Self::launch(&self.root, &self.key, &self.addr) {
                Ok((child, _, log)) => {
                    self.child = Some(child);
                    log.lock().unwrap().insert_str(0, &old);
                    self.log = log;
                    return;
                }
                Err(log) if t.elapsed() > std::time::Duration::from_secs(60) => {
                    panic!("agent did not start again on {}:\n{old}{log}", self.addr)
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }

    /// SIGKILL: the node vanishes.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback TCP port reserved for one test while this lives. It comes from below the
/// kernel's ephemeral range, so no `bind(0)` and no outgoing connection on this machine is
/// ever given it (another test's server, agent, container port or client socket), and a
/// lock file keeps every other test process off it; it was free when leased. For a port a
/// test must know before its server starts, or bind again after a restart: a port taken
/// with `bind(0)` and let go can be handed to anyone in between.
pub struct PortLease {
    pub port: u16,
    _lock: std::fs::File,
}

pub fn lease_port() -> PortLease {
    use std::os::fd::AsRawFd;
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    // A span under the ephemeral range, above the well-known ports.
    let (low, high) = (
        ephemeral_low.saturating_sub(12000).max(10000),
        ephemeral_low,
    );
    assert!(
        high > low + 1000,
        "ip_local_port_range starts too low: {ephemeral_low}"
    );
    let dir = std::env::temp_dir().join("magrathea-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let span = u64::from(high - low);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let seed = u64::from(std::process::id()) * 7919 + u64::from(nanos);
    for i in 0..span {
        let port = low + ((seed + i) % span) as u16;
        let Ok(lock) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        // Free right now for TCP and UDP (a DNS server takes both).
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return PortLease { port, _lock: lock };
        }
    }
    panic!("no free port to lease in {low}..{high}");
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- agent {} log ----\n{}",
                self.addr,
                self.log.lock().unwrap()
            );
        }
        // Processes this agent started.
        if let Some(inst) = self.instance.clone().or_else(|| node_instance(&self.root)) {
            remove_instance_containers(&inst);
        }
    }
}

/// Polls an app through the router until stopped; counts answers that were not 200.
pub struct Poller {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<std::sync::atomic::AtomicUsize>,
    handle: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Poller {
    pub fn start(port: u16, app: &str) -> Poller {
        use std::sync::atomic::Ordering::SeqCst;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, oks, host) = (stop.clone(), ok.clone(), format!("{app}.localhost"));
        let handle = std::thread::spawn(move || {
            let (mut bad, mut errors) = (0, vec![]);
            while !s.load(SeqCst) {
                let (status, body) = http_get(port, &host, "/");
                if status == 200 {
                    oks.fetch_add(1, SeqCst);
                } else {
                    bad += 1;
                    if errors.len() < 5 {
                        errors.push(format!("{status}: {}", body.trim()));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (bad, errors)
        });
        Poller {
            stop,
            ok,
            handle: Some(handle),
        }
    }

    /// Waits until `n` more requests than now have been answered 200: the poller surely
    /// covers what happens before and after (a fixed sleep may see none on a loaded
    /// machine). A bound on a hang only.
    pub fn wait_for_answers(&self, n: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        let want = self.ok.load(SeqCst) + n;
        let t = std::time::Instant::now();
        while self.ok.load(SeqCst) < want {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(120),
                "the poller got {} answers, wanted {want}",
                self.ok.load(SeqCst)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// (ok, failed, first errors)
    pub fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (bad, errors) = self.handle.take().unwrap().join().unwrap();
        (
            self.ok.load(std::sync::atomic::Ordering::SeqCst),
            bad,
            errors,
        )
    }
}

/// Run `cmd` to its end, or kill it after `secs`: `None` if it had to be killed. For checks
/// that a command does not hang (the bound is far above how long it should take).
pub fn output_within(cmd: &mut Command, secs: u64) -> Option<Output> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = vec![];
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Some(Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    })
}

/// A static file server on loopback (python3's http.server) serving `root`: buildpacks by
/// URL and submodules come from it, as git repositories (git's "dumb" HTTP protocol) and
/// tarballs, as from a public host.
pub struct FileServer {
    child: std::process::Child,
    port: u16,
}

impl FileServer {
    pub fn start(root: &Path) -> FileServer {
        require("python3");
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("http.server said {line:?}"));
        FileServer { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
