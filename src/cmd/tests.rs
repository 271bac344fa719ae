//! The command table's own tests: grammar, aliases, roles, help.
use super::*;

fn argv(s: &str) -> Vec<String> {
    shell_words::split(s).unwrap()
}

#[test]
fn parsing() {
    assert!(matches!(
        parse(&argv("apps:create web")),
        Ok(Cmd::AppsCreate(..))
    ));
    let e = parse(&argv("frobnicate")).unwrap_err();
    assert_eq!(e.code, 1);
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("unknown command 'frobnicate' (try 'help')")
    );
    let e = parse(&argv("apps:create")).unwrap_err();
    assert_eq!(e.code, 2);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert_eq!(msg.trim_end().lines().count(), 1, "{msg}");
    assert!(
        msg.contains("<NAME>") && msg.contains("usage: apps:create"),
        "{msg}"
    );
    let h = parse(&argv("apps:create --help")).unwrap_err();
    assert_eq!(h.code, 0);
    assert!(String::from_utf8_lossy(&h.stdout).contains("apps:create"));
    assert!(parse(&argv("access:grant web bob god")).is_err());
    // Found by fuzzing: clap quotes a bad argument as typed, control characters and all.
    let e = parse(&["apps:create".into(), "a".into(), "b\r\x1b[2Jc".into()]).unwrap_err();
    let msg = String::from_utf8_lossy(&e.stderr);
    let line = msg.strip_suffix('\n').unwrap();
    assert!(!line.chars().any(char::is_control), "{msg:?}");
    assert!(line.contains("'bc'"), "{msg:?}");
    assert_eq!(parse(&[]).unwrap_err().code, 0);
    assert!(is_command("releases:info") && !is_command("releases:inf"));
}

/// Dokku's names for the same commands, so a team's scripts keep working; flags before
/// the app, as Dokku's docs write them.
#[test]
fn dokku_names_parse_as_ours() {
    for (line, ok) in [
        (
            "apps:list",
            matches!(parse(&argv("apps:list")), Ok(Cmd::Apps(..))),
        ),
        (
            "config:show",
            matches!(parse(&argv("config:show shop")), Ok(Cmd::Config(..))),
        ),
        (
            "ps:scale",
            matches!(
                parse(&argv("ps:scale shop web=2 worker=1")),
                Ok(Cmd::Scale(..))
            ),
        ),
        (
            "ps:restart",
            matches!(parse(&argv("ps:restart shop")), Ok(Cmd::Restart(..))),
        ),
        (
            "ps:stop",
            matches!(parse(&argv("ps:stop shop")), Ok(Cmd::Stop(..))),
        ),
        (
            "ps:start",
            matches!(parse(&argv("ps:start shop")), Ok(Cmd::Start(..))),
        ),
        (
            "config:set --no-restart",
            matches!(
                parse(&argv("config:set --no-restart shop A=1")),
                Ok(Cmd::ConfigSet(..))
            ),
        ),
    ] {
        assert!(ok, "{line}");
    }
    assert!(is_command("ps:scale") && is_command("ps:rebuild") && !is_command("ps:report"));
    // Help lists each command once, by its own name.
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(names.contains(&"scale".to_string()) && !names.contains(&"ps:scale".to_string()));
}

/// Names are checked by the parser, and said as the name grammar says them.
#[test]
fn names_are_checked_while_parsing() {
    for (line, want) in [
        ("apps:create ../x", "error: invalid app name '../x'"),
        ("ps Shop", "error: invalid app name 'Shop'"),
        (
            "ps shop --env 'a b'",
            "error: invalid environment name 'a b'",
        ),
        ("keys:remove a;b", "error: invalid key name 'a;b'"),
        ("restart shop Web", "error: invalid process type name 'Web'"),
        (
            "logs shop --process web.0",
            "error: --process 'web.0': expected a process type (web) or process (web.1)",
        ),
    ] {
        let e = parse(&argv(line)).unwrap_err();
        assert_eq!(e.code, 1, "{line}");
        let msg = String::from_utf8_lossy(&e.stderr);
        assert!(msg.starts_with(want), "{line}: {msg}");
        assert_eq!(msg.lines().count(), 1, "{line}: {msg}");
    }
}

/// Every command and the access it needs, in one place: a change to who may do what
/// shows up in review as a change to `roles.txt`.
#[test]
fn role_table_is_as_reviewed() {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let table = role_table();
    assert_eq!(
        names,
        table.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>()
    );
    let got: String = table
        .iter()
        .map(|(name, need)| format!("{name:<20} {need}\n"))
        .collect();
    let want = include_str!("roles.txt");
    assert!(
        got == want,
        "the role table changed; if that is meant, put this in src/cmd/roles.txt:\n{got}"
    );
}
