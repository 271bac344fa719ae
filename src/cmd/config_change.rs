//! `config:set APP KEY=VALUE... ` and `config:unset APP KEY...` (owner): one family, as
//! they share everything but how they read their arguments. A change that alters something
//! is a new release rolled out like a deploy (see `Core::change_config`).

use std::collections::BTreeMap;

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::controller::view::{ConfigChange, ConfigOutcome};
use crate::names::{AppName, EnvName};

/// Set config vars; a change is a new release, rolled out (owner)
#[derive(Debug, clap::Args)]
pub struct ConfigSet {
    app: AppName,
    #[arg(value_name = "KEY=VALUE", required = true)]
    pairs: Vec<String>,
    #[arg(long, default_value = "production")]
    env: EnvName,
    /// Store only; the next deploy picks it up
    #[arg(long)]
    no_restart: bool,
    /// Values are base64 (as Dokku's --encoded): decoded before they are stored
    #[arg(long)]
    encoded: bool,
}

/// Remove config vars; a change is a new release, rolled out (owner)
#[derive(Debug, clap::Args)]
pub struct ConfigUnset {
    app: AppName,
    #[arg(value_name = "KEY", required = true)]
    keys: Vec<String>,
    #[arg(long, default_value = "production")]
    env: EnvName,
    #[arg(long)]
    no_restart: bool,
}

impl Command for ConfigSet {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let set = parse_pairs(&self.pairs, self.encoded)?;
        let change = ConfigChange {
            set,
            unset: vec![],
            no_restart: self.no_restart,
        };
        apply(cx, &self.app, &self.env, change).await
    }
}

impl Command for ConfigUnset {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        for k in &self.keys {
            check_key(k)?;
        }
        let change = ConfigChange {
            set: BTreeMap::new(),
            unset: self.keys,
            no_restart: self.no_restart,
        };
        apply(cx, &self.app, &self.env, change).await
    }
}

async fn apply(cx: &mut Ctx<'_>, app: &str, env: &str, change: ConfigChange) -> CmdResult<Done> {
    if change.set.is_empty() && change.unset.is_empty() {
        return Err(CmdError::Invalid(
            "nothing to change: give KEY=VALUE (config:set) or KEY (config:unset)".into(),
        ));
    }
    let who = &cx.who.name;
    Ok(
        match cx.core.change_config(who, app, env, change, cx.out).await? {
            ConfigOutcome::Unchanged => "no change; nothing restarted\n".to_string(),
            ConfigOutcome::Stored(names) => {
                format!("{names} changed for {app} in {env}; takes effect on the next deploy\n")
            }
            ConfigOutcome::Released(version) => {
                format!("v{version} of {app} is live in {env} with the new config\n")
            }
        }
        .into(),
    )
}

/// `KEY=VALUE` arguments, keys checked, values decoded (`--encoded`) and free of NUL.
fn parse_pairs(set: &[String], encoded: bool) -> CmdResult<BTreeMap<String, String>> {
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
    Ok(pairs)
}

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
