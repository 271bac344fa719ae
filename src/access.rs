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
}

impl Grant {
    pub fn admin() -> Self {
        Grant {
            role: AppRole::Owner,
            tags: None,
        }
    }

    /// May this grant move `refname`? Returns why not.
    pub fn may_push_ref(&self, refname: &str) -> Result<(), String> {
        if self.role < AppRole::Deployer {
            return Err(format!("role {} may not push", self.role));
        }
        match &self.tags {
            None => Ok(()),
            Some(p) => match refname.strip_prefix("refs/tags/") {
                Some(tag) if crate::names::glob_match(p, tag) => Ok(()),
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
        let ci = Grant {
            role: AppRole::Deployer,
            tags: Some("v*".into()),
        };
        assert!(ci.may_push_ref("refs/tags/v1.2").is_ok());
        assert!(ci.may_push_ref("refs/heads/main").is_err());
        assert!(ci.may_push_ref("refs/tags/x1").is_err());
        let viewer = Grant {
            role: AppRole::Viewer,
            tags: None,
        };
        assert!(viewer.may_push_ref("refs/heads/main").is_err());
        assert!(Grant::admin().may_push_ref("refs/heads/anything").is_ok());
        assert!(AppRole::Owner > AppRole::Deployer && AppRole::Deployer > AppRole::Viewer);
    }
}
