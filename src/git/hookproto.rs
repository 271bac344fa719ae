//! The wire format between `magrathea hook pre-receive` and the controller, over the unix
//! socket: one JSON request line, then newline-delimited frames until an exit frame.

use serde::{Deserialize, Serialize};

/// One line of pre-receive's input: a ref and its old and new object ids.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookRequest {
    pub push_id: String,
    pub token: String,
    pub updates: Vec<RefUpdate>,
    /// Quarantine directories, so the controller can read the pushed objects before the
    /// refs move.
    #[serde(default)]
    pub object_dir: Option<String>,
    #[serde(default)]
    pub alternates: Option<String>,
    #[serde(default)]
    pub push_options: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Frame {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub out: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit: Option<i32>,
}

/// A progress line (`Sink`'s channel carries frames).
impl From<String> for Frame {
    fn from(s: String) -> Frame {
        Frame::out(s)
    }
}

impl Frame {
    pub fn out(s: impl Into<String>) -> Frame {
        Frame {
            out: Some(s.into()),
            exit: None,
        }
    }
    pub fn exit(code: i32) -> Frame {
        Frame {
            out: None,
            exit: Some(code),
        }
    }
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{\"exit\":1}".into());
        s.push('\n');
        s
    }
}

/// Parse pre-receive's stdin: `<old> <new> <ref>` per line.
pub fn parse_updates(input: &str) -> Result<Vec<RefUpdate>, String> {
    input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next(), it.next(), it.next()) {
                (Some(o), Some(n), Some(r), None)
                    if is_oid(o) && is_oid(n) && r.starts_with("refs/") =>
                {
                    Ok(RefUpdate {
                        old: o.into(),
                        new: n.into(),
                        name: r.into(),
                    })
                }
                _ => Err(format!("malformed ref update line: {l:?}")),
            }
        })
        .collect()
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_and_frames() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let u = parse_updates(&format!("{z} {a} refs/heads/main\n{a} {z} refs/tags/v1\n")).unwrap();
        assert_eq!(u.len(), 2);
        assert!(is_zero(&u[0].old) && is_zero(&u[1].new));
        assert!(parse_updates("x y refs/heads/main").is_err());
        assert!(parse_updates(&format!("{z} {a} main")).is_err());
        let f: Frame = serde_json::from_str(Frame::out("hi").to_line().trim()).unwrap();
        assert_eq!(f, Frame::out("hi"));
        assert_eq!(Frame::exit(1).to_line(), "{\"exit\":1}\n");
    }
}
