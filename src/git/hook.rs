//! `magrathea hook pre-receive`: run by git inside a push. Short-lived and synchronous: it
//! reads the ref updates, hands them to the controller over the unix socket, relays the
//! controller's output (the pusher sees it as `remote:` lines) and exits with its verdict.
//! Anything unexpected rejects the push (fail closed).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use super::hookproto::{parse_updates, Frame, HookRequest};

pub fn pre_receive() -> i32 {
    match run() {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}; push rejected");
            1
        }
    }
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (is this hook run by magrathea?)"))
}

fn run() -> Result<i32, String> {
    let socket = env("MAGRATHEA_HOOK_SOCKET")?;
    let mut input = String::new();
    std::io::stdin()
        .take(16 << 20)
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read ref updates: {e}"))?;
    let updates = parse_updates(&input)?;
    let push_options = match std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) => (0..n.min(100))
            .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
            .collect(),
        None => vec![],
    };
    let req = HookRequest {
        push_id: env("MAGRATHEA_PUSH_ID")?,
        token: env("MAGRATHEA_PUSH_TOKEN")?,
        updates,
        object_dir: std::env::var("GIT_OBJECT_DIRECTORY").ok(),
        alternates: std::env::var("GIT_ALTERNATE_OBJECT_DIRECTORIES").ok(),
        push_options,
    };
    let mut stream = UnixStream::connect(&socket)
        .map_err(|e| format!("cannot reach the magrathea controller at {socket} ({e})"))?;
    let mut line = serde_json::to_string(&req).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("cannot talk to the controller ({e})"))?;
    let stdout = std::io::stdout();
    for frame in BufReader::new(stream).lines() {
        let frame = frame.map_err(|e| format!("lost the controller ({e})"))?;
        let f: Frame = serde_json::from_str(&frame)
            .map_err(|e| format!("bad frame from the controller ({e})"))?;
        if let Some(out) = f.out {
            let mut o = stdout.lock();
            let _ = o.write_all(out.as_bytes());
            if !out.ends_with('\n') && !out.ends_with('\r') {
                let _ = o.write_all(b"\n");
            }
            let _ = o.flush();
        }
        if let Some(code) = f.exit {
            return Ok(code);
        }
    }
    Err("the controller hung up before deciding".into())
}
