//! The audit text of a command line: what the trail shows of what was typed. Config
//! commands carry secrets in any shape, so they keep the least.

use clap::CommandFactory;

use super::{is_command, Cli};

/// Audit text for a command line. Config commands carry secrets in any shape (`K=V`,
/// `-E=V`, `KEY value`, a value where a key goes), so of their arguments only the command,
/// the app, the flags they know and key names are kept; every other one is `***`. An
/// unknown command keeps its name only. Elsewhere a `K=V` argument has its value hidden.
pub fn redact(argv: &[String]) -> String {
    let Some(first) = argv.first() else {
        return String::new();
    };
    // An unknown command's name is shown only if it looks like one (it may be a value).
    let name = if is_command(first)
        || (first.len() <= 60
            && first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.')))
    {
        first.clone()
    } else {
        "***".to_string()
    };
    let rest = &argv[1..];
    let redacted: Vec<String> = if !is_command(first) {
        rest.iter().map(|_| "***".to_string()).collect()
    } else if first.starts_with("config") {
        redact_config(first, rest)
    } else {
        rest.iter()
            .map(|a| match a.split_once('=') {
                Some((k, _)) if !k.starts_with('-') => format!("{k}=***"),
                _ => a.clone(),
            })
            .collect()
    };
    std::iter::once(name)
        .chain(redacted)
        .collect::<Vec<_>>()
        .join(" ")
}

fn redact_config(cmd: &str, args: &[String]) -> Vec<String> {
    let key_shaped = |k: &str| {
        !k.is_empty()
            && k.len() <= 128
            && k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let name_shaped = |v: &str| crate::names::check("env", v).is_ok();
    let pairs = cmd == "config:set";
    // The command's own switches (flags without a value), from the grammar so the list
    // cannot drift: they are shown, anything else starting with '-' may hold a value.
    let switches: Vec<String> = Cli::command()
        .find_subcommand(cmd)
        .map(|c| {
            c.get_arguments()
                .filter(|a| !a.get_action().takes_values())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect()
        })
        .unwrap_or_default();
    let (mut out, mut app_seen, mut env_next) = (vec![], false, false);
    for a in args {
        let shown = if env_next {
            env_next = false;
            if name_shaped(a) {
                a.clone()
            } else {
                "***".into()
            }
        } else if a == "--env" {
            env_next = true;
            a.clone()
        } else if let Some(v) = a.strip_prefix("--env=") {
            if name_shaped(v) {
                a.clone()
            } else {
                "--env=***".into()
            }
        } else if matches!(a.as_str(), "--help" | "-h" | "--") || switches.contains(a) {
            a.clone()
        } else if a.starts_with('-') {
            "***".into()
        } else if !app_seen {
            app_seen = true;
            if name_shaped(a) {
                a.clone()
            } else {
                "***".into()
            }
        } else if pairs {
            match a.split_once('=') {
                Some((k, _)) if key_shaped(k) => format!("{k}=***"),
                _ => "***".into(),
            }
        } else if key_shaped(a) {
            a.clone()
        } else {
            "***".into()
        };
        out.push(shown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        shell_words::split(s).unwrap()
    }

    #[test]
    fn redaction() {
        let cases = [
            (
                "config:set web A=secret --env=prod",
                "config:set web A=*** --env=prod",
            ),
            ("config:set web -E=secret", "config:set web ***"),
            ("config:set web KEY secret", "config:set web *** ***"),
            (
                "config:set web --env prod 'B=x y' =s",
                "config:set web --env prod B=*** ***",
            ),
            (
                "config:set web --no-restart -- A=s",
                "config:set web --no-restart -- A=***",
            ),
            ("config:set 'sec ret' A=b", "config:set *** A=***"),
            (
                "config:set web --env=s3cr=t A=b",
                "config:set web --env=*** A=***",
            ),
            (
                "config:set web --env 's3 cret' A=b",
                "config:set web --env *** A=***",
            ),
            ("config:get web KEY", "config:get web KEY"),
            (
                "config:set web --encoded A=czNjcmV0 --json",
                "config:set web --encoded A=*** ***",
            ),
            ("config --json web", "config --json web"),
            ("config:get web s3cr=t", "config:get web ***"),
            ("config:unset web A B -Xsecret", "config:unset web A B ***"),
            ("config:sett web A=secret", "config:sett *** ***"),
            ("configure web hunter2", "configure *** ***"),
            ("frobnicate A=secret hunter2", "frobnicate *** ***"),
            ("DB_URL=postgres://u:pw@h/db", "***"),
            (
                "config:set shop -E=s3 KEY s4 --env=prod B=s5",
                "config:set shop *** *** *** --env=prod B=***",
            ),
            ("apps:create web", "apps:create web"),
            ("deploy web v2 --env=staging", "deploy web v2 --env=staging"),
            ("run web -- env X=secret", "run web -- env X=***"),
        ];
        for (line, want) in cases {
            assert_eq!(redact(&argv(line)), want, "{line}");
        }
        assert_eq!(redact(&[]), "");
    }
}
