//! Who may do what. Keys are `admin` (everything) or `user`; users get per-app roles.
//! A grant may carry a tag pattern: that key may then push only tags matching it (CI keys).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AppRole {
    Viewer,
    Deployer,
    Owner,
}

impl AppRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AppRole::Viewer => "viewer",
            AppRole::Deployer => "deployer",
            AppRole::Owner => "owner",
        }
    }
}

impl fmt::Display for AppRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AppRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(AppRole::Viewer),
            "deployer" => Ok(AppRole::Deployer),
            "owner" => Ok(AppRole::Owner),
            _ => Err(format!("unknown role '{s}' (viewer, deployer or owner)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Admin,
    User,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Admin => "admin",
            KeyRole::User => "user",
        }
    }
}

impl FromStr for KeyRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(KeyRole::Admin),
            "user" => Ok(KeyRole::User),
            _ => Err(format!("unknown key role '{s}' (admin or user)")),
        }
    }
}

/// The authenticated caller: the key is the identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_id: i64,
    pub name: String,
    pub fingerprint: String,
    pub role: KeyRole,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == KeyRole::Admin
    }
}

/// What a key may do on one app, resolved from its key role and grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: AppRole,
    /// Pushes limited to tags matching this pattern.
    pub tags: Option<String>,
    /// A tag-limited key may also move and delete the tags it may push (`--allow-retag`);
    /// without it, a tag it pushed is immutable to it.
    pub allow_retag: bool,
}

/// What a ref update does, as git would say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefChange {
    Create,
    /// A fast-forward: the new commit descends from the old one.
    Update,
    /// Any other move.
    Force,
    Delete,
}

impl RefChange {
    pub fn as_str(self) -> &'static str {
        match self {
            RefChange::Create => "create",
            RefChange::Update => "update",
            RefChange::Force => "force",
            RefChange::Delete => "delete",
        }
    }
}

impl Grant {
    pub fn admin() -> Self {
        Grant {
            role: AppRole::Owner,
            tags: None,
            allow_retag: false,
        }
    }

    /// May this grant make `change` to `refname`? Returns why not.
    pub fn may_push_ref(&self, refname: &str, change: RefChange) -> Result<(), String> {
        if self.role < AppRole::Deployer {
            return Err(format!("role {} may not push", self.role));
        }
        match &self.tags {
            None => Ok(()),
            Some(p) => match refname.strip_prefix("refs/tags/") {
                // A release tag is what went live: a CI key creates it, never moves it.
                Some(tag) if crate::names::glob_match(p, tag) => {
                    if change == RefChange::Create || self.allow_retag {
                        Ok(())
                    } else {
                        Err(format!(
                            "this key may not {} existing tag {tag} (tags it pushes are immutable unless its grant has --allow-retag)",
                            match change {
                                RefChange::Delete => "delete",
                                _ => "move",
                            }
                        ))
                    }
                }
                _ => Err(format!(
                    "this key may only push tags matching '{p}'; refusing {refname}"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_limited_grants() {
        use RefChange::*;
        let ci = Grant {
            role: AppRole::Deployer,
            tags: Some("v*".into()),
            allow_retag: false,
        };
        assert!(ci.may_push_ref("refs/tags/v1.2", Create).is_ok());
        for c in [Update, Force, Delete] {
            let e = ci.may_push_ref("refs/tags/v1.2", c).unwrap_err();
            assert!(e.contains("--allow-retag"), "{e}");
        }
        assert!(ci.may_push_ref("refs/heads/main", Create).is_err());
        assert!(ci.may_push_ref("refs/tags/x1", Create).is_err());
        let retag = Grant {
            allow_retag: true,
            ..ci.clone()
        };
        for c in [Create, Update, Force, Delete] {
            assert!(retag.may_push_ref("refs/tags/v1.2", c).is_ok());
        }
        assert!(retag.may_push_ref("refs/heads/main", Update).is_err());
        let viewer = Grant {
            role: AppRole::Viewer,
            tags: None,
            allow_retag: false,
        };
        assert!(viewer.may_push_ref("refs/heads/main", Update).is_err());
        for c in [Create, Update, Force, Delete] {
            assert!(Grant::admin()
                .may_push_ref("refs/heads/anything", c)
                .is_ok());
        }
        assert!(AppRole::Owner > AppRole::Deployer && AppRole::Deployer > AppRole::Viewer);
    }
}
