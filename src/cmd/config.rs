//! config, config:get, config:set, config:unset (owner). Values live on the controller only,
//! sealed at rest; a change that alters something is a new release rolled out like a deploy.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::controller::view::{ConfigChange, ConfigOutcome};
use crate::controller::{Core, Sink};

const RESERVED: &[&str] = &["PORT", "HOME", "DATA_DIR", "PATH", "DYNO"];

fn check_key(k: &str) -> Result<(), CmdError> {
    let ok = !k.is_empty()
        && k.len() <= 128
        && k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(CmdError::Invalid(format!(
            "invalid config key '{}': use A-Z, 0-9 and _",
            k.chars().take(40).collect::<String>()
        )));
    }
    if RESERVED.contains(&k) || k.starts_with("MAGRATHEA_") {
        return Err(CmdError::Invalid(format!(
            "{k} is set by magrathea and cannot be configured"
        )));
    }
    Ok(())
}

pub fn show(core: &Arc<Core>, app: &str, env: &str, json: bool) -> CmdResult {
    crate::names::check("environment", env)?;
    let vars = core.config(app, env)?;
    if json {
        return Ok(table::json(&vars));
    }
    if vars.is_empty() {
        return Ok(format!("no config vars for {app} in {env}\n"));
    }
    Ok(vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect())
}

pub fn get(core: &Arc<Core>, app: &str, key: &str, env: &str) -> CmdResult {
    crate::names::check("environment", env)?;
    let vars = core.config(app, env)?;
    vars.get(key)
        .map(|v| format!("{v}\n"))
        .ok_or_else(|| CmdError::Invalid(format!("{key} is not set for {app} in {env}")))
}

/// Apply a change; roll it out when something changed and something is live.
/// What `config:set` / `config:unset` asks for.
pub struct Change<'a> {
    pub set: &'a [String],
    pub unset: &'a [String],
    pub no_restart: bool,
    /// Values are base64.
    pub encoded: bool,
}

/// Standard base64 (RFC 4648, `+/`), padding optional, nothing else allowed: a config
/// value someone encoded to carry newlines or binary-safe text through a shell.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

pub async fn change(
    core: &Arc<Core>,
    who: &str,
    app: &str,
    env: &str,
    change: Change<'_>,
    out: &mut Sink,
) -> CmdResult {
    let Change {
        set,
        unset,
        no_restart,
        encoded,
    } = change;
    crate::names::check("environment", env)?;
    if set.is_empty() && unset.is_empty() {
        return Err(CmdError::Invalid(
            "nothing to change: give KEY=VALUE (config:set) or KEY (config:unset)".into(),
        ));
    }
    let mut pairs = BTreeMap::new();
    for kv in set {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            CmdError::Invalid(format!(
                "'{}' is not KEY=VALUE",
                kv.split('=').next().unwrap_or("")
            ))
        })?;
        check_key(k)?;
        let decoded;
        let v = if encoded {
            let bytes = base64_decode(v).ok_or_else(|| {
                CmdError::Invalid(format!("the value of {k} is not valid base64 (--encoded)"))
            })?;
            decoded = String::from_utf8(bytes).map_err(|_| {
                CmdError::Invalid(format!(
                    "the value of {k} does not decode to UTF-8 text (--encoded)"
                ))
            })?;
            decoded.as_str()
        } else {
            v
        };
        if v.contains('\0') {
            return Err(CmdError::Invalid(format!(
                "the value of {k} contains a NUL byte"
            )));
        }
        pairs.insert(k.to_string(), v.to_string());
    }
    for k in unset {
        check_key(k)?;
    }
    let change = ConfigChange {
        set: pairs,
        unset: unset.to_vec(),
        no_restart,
    };
    Ok(
        match core.change_config(who, app, env, change, out).await? {
            ConfigOutcome::Unchanged => "no change; nothing restarted\n".into(),
            ConfigOutcome::Stored(names) => {
                format!("{names} changed for {app} in {env}; takes effect on the next deploy\n")
            }
            ConfigOutcome::Released(version) => {
                format!("v{version} of {app} is live in {env} with the new config\n")
            }
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_values() {
        let d = |s: &str| super::base64_decode(s).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(d("aGVsbG8gd29ybGQ=").as_deref(), Some("hello world"));
        assert_eq!(d("aGVsbG8gd29ybGQ").as_deref(), Some("hello world"));
        assert_eq!(d("bGluZTEKbGluZTI=").as_deref(), Some("line1\nline2"));
        assert_eq!(d("").as_deref(), Some(""));
        assert_eq!(d("YQ==").as_deref(), Some("a"));
        for bad in ["a", "a*bc", "YQ=x", "aGVsbG8 "] {
            assert!(super::base64_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn keys() {
        assert!(super::check_key("DATABASE_URL").is_ok());
        assert!(super::check_key("_X1").is_ok());
        for bad in ["", "1A", "A-B", "A B", "PORT", "MAGRATHEA_X", "a;b"] {
            assert!(super::check_key(bad).is_err(), "{bad}");
        }
    }
}
