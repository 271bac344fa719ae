//! The service backup verbs of the controller <-> agent protocol (see `proto`, which
//! re-exports them): a dump streamed out of a service, one loaded into it (or staged beside
//! it and swapped in), one restored into a throwaway instance.

use serde::{Deserialize, Serialize};

use super::proto::Request;

/// Service backups (`controller/backups.rs`). The dump travels raw, never as JSON and never
/// through the shared connection's small calls: `service-dump` answers with the dump on
/// stdout (exit 0 once it is whole; on failure exit 1 and the reason as the last stderr
/// line), `service-load` and `service-verify` take one on stdin and answer with one JSON
/// [`LoadReply`]. Their requests travel on the exec line (stdin is the dump).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpTarget {
    /// The service's key on the node (its container and data dir).
    pub key: String,
    /// `postgres`, `redis`, `mariadb`: how to dump and load it.
    pub kind: String,
    /// The service's name (its database is named after it).
    pub name: String,
}

impl DumpTarget {
    fn words(&self) -> Vec<String> {
        vec![self.key.clone(), self.kind.clone(), self.name.clone()]
    }

    fn from_words(w: &[String]) -> Option<DumpTarget> {
        match w {
            [key, kind, name] => Some(DumpTarget {
                key: key.clone(),
                kind: kind.clone(),
                name: name.clone(),
            }),
            _ => None,
        }
    }
}

/// `service-dump KEY KIND NAME`: a consistent dump of the running service on stdout
/// (`pg_dump -Fc`, an RDB after `BGSAVE`, `mariadb-dump --single-transaction`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceDumpReq {
    pub target: DumpTarget,
}

impl ServiceDumpReq {
    pub const VERB: &'static str = "service-dump";

    pub fn args(&self) -> Vec<String> {
        self.target.words()
    }

    pub fn from_args(args: &[String]) -> Option<ServiceDumpReq> {
        DumpTarget::from_words(args).map(|target| ServiceDumpReq { target })
    }
}

/// `service-load KEY KIND NAME [keep|staged]`: the dump on stdin replaces the running
/// service's data. With `keep`, a Postgres service keeps what it replaced beside it (see
/// [`LoadReply::kept`]) until a [`ServiceSettleReq`] drops it or puts it back. With
/// `staged` (Postgres), the dump is loaded into a new database beside the live one and
/// nothing is replaced yet: a [`ServiceSwapReq`] swaps it in or drops it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceLoadReq {
    pub target: DumpTarget,
    #[serde(default)]
    pub keep: bool,
    #[serde(default)]
    pub staged: bool,
    /// The dump was made elsewhere (`services:import`): its owners and grants are not this
    /// service's (see `agent::svcbackup`).
    #[serde(default)]
    pub foreign: bool,
    /// A Postgres dump in plain SQL (an import): replayed by psql, not pg_restore.
    #[serde(default)]
    pub sql: bool,
}

impl Request for ServiceLoadReq {
    const VERB: &'static str = "service-load";
    type Reply = LoadReply;

    fn args(&self) -> Vec<String> {
        let mut w = self.target.words();
        if self.staged {
            w.push("staged".into());
        } else if self.keep {
            w.push("keep".into());
        }
        if self.foreign {
            w.push("foreign".into());
        }
        if self.sql {
            w.push("sql".into());
        }
        w
    }
}

impl ServiceLoadReq {
    pub fn from_args(args: &[String]) -> Option<ServiceLoadReq> {
        // The target's three words, then the modes: a service named `keep` or `staged` is
        // still one.
        if args.len() < 3 {
            return None;
        }
        let (t, modes) = args.split_at(3);
        let (mut keep, mut staged, mut foreign, mut sql) = (false, false, false, false);
        for m in modes {
            let flag = match m.as_str() {
                "keep" => &mut keep,
                "staged" => &mut staged,
                "foreign" => &mut foreign,
                "sql" => &mut sql,
                _ => return None,
            };
            if *flag {
                return None;
            }
            *flag = true;
        }
        if keep && staged {
            return None;
        }
        DumpTarget::from_words(t).map(|target| ServiceLoadReq {
            target,
            keep,
            staged,
            foreign,
            sql,
        })
    }
}

/// `service-swap`: after a `service-load` with `staged`, the staged database replaces the
/// live one in one step (what it replaced dropped after the answer), or (`discard`) is
/// dropped and nothing changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSwapReq {
    pub target: DumpTarget,
    #[serde(default)]
    pub discard: bool,
}

impl Request for ServiceSwapReq {
    const VERB: &'static str = "service-swap";
    type Reply = LoadReply;
}

/// `service-settle`: after a `service-load` with `keep`, the data it replaced dropped, or
/// (`undo`) put back in place of what was loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSettleReq {
    pub target: DumpTarget,
    #[serde(default)]
    pub undo: bool,
}

impl Request for ServiceSettleReq {
    const VERB: &'static str = "service-settle";
    type Reply = LoadReply;
}

/// `service-verify KEY KIND NAME IMAGE UID`: the dump on stdin loaded into a throwaway
/// instance of `IMAGE` (no network, its own temp data dir, removed after), as the service's
/// uid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceVerifyReq {
    pub target: DumpTarget,
    pub image: String,
    pub uid: u32,
}

impl Request for ServiceVerifyReq {
    const VERB: &'static str = "service-verify";
    type Reply = LoadReply;

    fn args(&self) -> Vec<String> {
        let mut w = self.target.words();
        w.extend([self.image.clone(), self.uid.to_string()]);
        w
    }
}

impl ServiceVerifyReq {
    pub fn from_args(args: &[String]) -> Option<ServiceVerifyReq> {
        match args {
            [t @ .., image, uid] => Some(ServiceVerifyReq {
                target: DumpTarget::from_words(t)?,
                image: image.clone(),
                uid: uid.parse().ok()?,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReply {
    /// Bytes of dump taken from stdin.
    pub bytes: u64,
    /// What the loaded instance holds, in words (`12 tables`, `40 keys`).
    #[serde(default)]
    pub holds: String,
    /// The replaced data is kept beside the service (a `service-load` with `keep`).
    #[serde(default)]
    pub kept: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_verbs_travel_on_the_exec_line() {
        let t = DumpTarget {
            key: "0123abcd".into(),
            kind: "postgres".into(),
            name: "shop-db".into(),
        };
        let d = ServiceDumpReq { target: t.clone() };
        assert_eq!(ServiceDumpReq::from_args(&d.args()).unwrap().target, t);
        let l = ServiceLoadReq {
            target: t.clone(),
            keep: false,
            staged: false,
            foreign: false,
            sql: false,
        };
        assert_eq!(ServiceLoadReq::from_args(&l.args()).unwrap().target, t);
        let k = ServiceLoadReq {
            target: t.clone(),
            keep: true,
            staged: false,
            foreign: false,
            sql: false,
        };
        let back = ServiceLoadReq::from_args(&k.args()).unwrap();
        assert!(back.keep && !back.staged && back.target == t);
        let s = ServiceLoadReq {
            target: t.clone(),
            keep: false,
            staged: true,
            foreign: false,
            sql: false,
        };
        let back = ServiceLoadReq::from_args(&s.args()).unwrap();
        assert!(back.staged && !back.keep && !back.foreign && back.target == t);
        let f = ServiceLoadReq {
            foreign: true,
            sql: true,
            ..s.clone()
        };
        let back = ServiceLoadReq::from_args(&f.args()).unwrap();
        assert!(back.staged && back.foreign && back.sql && back.target == t);
        let mut twice = f.args();
        twice.push("foreign".into());
        assert!(ServiceLoadReq::from_args(&twice).is_none(), "a mode twice");
        let mut both = t.words();
        both.extend(["keep".to_string(), "staged".to_string()]);
        assert!(
            ServiceLoadReq::from_args(&both).is_none(),
            "keep and staged"
        );
        let mut odd = t.words();
        odd.push("other".into());
        assert!(ServiceLoadReq::from_args(&odd).is_none(), "an unknown mode");
        assert!(ServiceVerifyReq::from_args(&k.args()).is_none());
        // A service named `keep` is a name, not the flag.
        let named = DumpTarget {
            name: "keep".into(),
            ..t.clone()
        };
        let back = ServiceLoadReq::from_args(&named.words()).unwrap();
        assert!(!back.keep && back.target == named);
        let named = DumpTarget {
            name: "staged".into(),
            ..t.clone()
        };
        let back = ServiceLoadReq::from_args(&named.words()).unwrap();
        assert!(!back.staged && back.target == named);
        let v = ServiceVerifyReq {
            target: t.clone(),
            image: "magrathea/svc-postgres-15:latest".into(),
            uid: 1_900_000_007,
        };
        let back = ServiceVerifyReq::from_args(&v.args()).unwrap();
        assert_eq!((back.target, back.image, back.uid), (t, v.image, v.uid));
        assert!(ServiceVerifyReq::from_args(&l.args()).is_none());
        assert!(ServiceLoadReq::from_args(&[]).is_none());
        let verbs = [
            ServiceDumpReq::VERB,
            ServiceLoadReq::VERB,
            ServiceVerifyReq::VERB,
        ];
        for v in verbs {
            assert!(v.starts_with("service-"), "{v}");
        }
    }
}
