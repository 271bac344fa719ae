//! Dokku's service plugin commands (`postgres:create db`, `redis:link cache app`, ...),
//! rewritten to ours before parsing, so a team's scripts and habits keep working. Their
//! grammar differs from ours (the type is in the command, a link names the service first),
//! so they cannot be plain aliases like `apps:list`. What Dokku does differently is kept
//! where it matters: `mysql:link` / `mariadb:link` set `DATABASE_URL`, as Dokku's do, and
//! `--alias BLUE_DATABASE` sets `BLUE_DATABASE_URL`. Import and export are aliases in the
//! command table (their grammar is ours).

/// Our type for a Dokku plugin's name.
fn service_type(plugin: &str) -> Option<&'static str> {
    match plugin {
        "postgres" => Some("postgres"),
        "redis" => Some("redis"),
        "mysql" | "mariadb" => Some("mariadb"),
        _ => None,
    }
}

/// `argv` as ours when it is one of Dokku's service commands we have (an error: its usage,
/// when words are missing); `None` otherwise (ours, or not a command at all: the parser
/// says which).
pub fn rewrite(argv: &[String]) -> Option<Result<Vec<String>, String>> {
    let (first, rest) = argv.split_first()?;
    let (plugin, verb) = first.split_once(':')?;
    let kind = service_type(plugin)?;
    let s = |v: &str| v.to_string();
    let mut out: Vec<String> = match (verb, rest) {
        ("create", [name, more @ ..]) => [s("services:create"), s(kind), name.clone()]
            .into_iter()
            .chain(more.iter().cloned())
            .collect(),
        ("list", more) => std::iter::once(s("services"))
            .chain(more.iter().cloned())
            .collect(),
        ("info", more) => std::iter::once(s("services:info"))
            .chain(more.iter().cloned())
            .collect(),
        ("connect" | "enter", more) => std::iter::once(s("services:connect"))
            .chain(more.iter().cloned())
            .collect(),
        ("destroy", [name, more @ ..]) => {
            let mut v = vec![s("services:destroy"), name.clone()];
            for m in more {
                match m.as_str() {
                    // Dokku asks unless forced; over ssh there is no one to ask.
                    "-f" | "--force" => v.extend([s("--confirm"), name.clone()]),
                    _ => v.push(m.clone()),
                }
            }
            v
        }
        ("logs", [name, more @ ..]) => {
            let mut v = vec![s("services:logs"), name.clone()];
            for m in more {
                match m.as_str() {
                    "-t" | "--tail" => v.push(s("-f")),
                    _ => v.push(m.clone()),
                }
            }
            v
        }
        ("link", [name, app, more @ ..]) => {
            let mut v = vec![s("services:link"), app.clone(), name.clone()];
            let mut var = (kind == "mariadb").then(|| s("DATABASE_URL"));
            let mut more = more.iter();
            while let Some(m) = more.next() {
                let alias = match m.as_str() {
                    "-a" | "--alias" => more.next().cloned(),
                    m => m.strip_prefix("--alias=").map(str::to_string),
                };
                match alias {
                    Some(a) => var = Some(format!("{}_URL", a.trim_end_matches("_URL"))),
                    None => v.push(m.clone()),
                }
            }
            if let Some(var) = var {
                v.extend([s("--as"), var]);
            }
            v
        }
        ("unlink", [name, app, more @ ..]) => [s("services:unlink"), app.clone(), name.clone()]
            .into_iter()
            .chain(more.iter().cloned())
            .collect(),
        ("link" | "unlink", _) => return Some(Err(format!("usage: {first} SERVICE APP"))),
        ("create" | "destroy" | "logs", []) => return Some(Err(format!("usage: {first} SERVICE"))),
        _ => return None,
    };
    out.shrink_to_fit();
    Some(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    fn r(line: &str) -> Option<String> {
        rewrite(&shell_words::split(line).unwrap()).map(|v| v.map_or_else(|e| e, |v| v.join(" ")))
    }

    #[test]
    fn dokku_service_commands_become_ours() {
        assert_eq!(
            r("postgres:create db").unwrap(),
            "services:create postgres db"
        );
        assert_eq!(
            r("mysql:create sql").unwrap(),
            "services:create mariadb sql"
        );
        assert_eq!(r("redis:list").unwrap(), "services");
        assert_eq!(r("postgres:info db").unwrap(), "services:info db");
        assert_eq!(r("postgres:enter db").unwrap(), "services:connect db");
        assert_eq!(
            r("postgres:destroy db -f").unwrap(),
            "services:destroy db --confirm db"
        );
        assert_eq!(r("postgres:destroy db").unwrap(), "services:destroy db");
        assert_eq!(r("redis:logs cache -t").unwrap(), "services:logs cache -f");
        // Dokku names the service first, and sets DATABASE_URL for MySQL too.
        assert_eq!(r("postgres:link db shop").unwrap(), "services:link shop db");
        assert_eq!(
            r("mariadb:link sql shop").unwrap(),
            "services:link shop sql --as DATABASE_URL"
        );
        assert_eq!(
            r("postgres:link db shop --alias BLUE_DATABASE").unwrap(),
            "services:link shop db --as BLUE_DATABASE_URL"
        );
        assert_eq!(
            r("redis:link cache shop -a QUEUE").unwrap(),
            "services:link shop cache --as QUEUE_URL"
        );
        assert_eq!(
            r("postgres:unlink db shop").unwrap(),
            "services:unlink shop db"
        );
        // Missing words: Dokku's usage, in one line.
        assert_eq!(
            r("postgres:link db").unwrap(),
            "usage: postgres:link SERVICE APP"
        );
        assert_eq!(r("redis:create").unwrap(), "usage: redis:create SERVICE");
        assert_eq!(r("postgres:upgrade db"), None);
        assert_eq!(r("services:create postgres db"), None);
        assert_eq!(r("apps:list"), None);
    }
}
