//! Who may do what: keys, grants on apps, and the audit trail as it is read back.

use super::{Core, CoreError};
use crate::access::{AppRole, KeyRole};
use crate::store::{AccessRow, AuditRow, KeyRow};

/// A grant to give, checked by the front end.
pub struct NewGrant<'a> {
    pub app: &'a str,
    pub key: &'a str,
    pub role: AppRole,
    /// Limit the key's pushes to tags matching this pattern.
    pub tags: Option<&'a str>,
    pub allow_retag: bool,
}

impl Core {
    pub fn keys(&self) -> Result<Vec<KeyRow>, CoreError> {
        Ok(self.store.list_keys()?)
    }

    pub fn add_key(
        &self,
        name: &str,
        key: &crate::keys::ParsedKey,
        role: KeyRole,
    ) -> Result<KeyRow, CoreError> {
        crate::names::check("key", name)?;
        Ok(self
            .store
            .add_key(name, &key.fingerprint, &key.openssh, role)?)
    }

    pub fn remove_key(&self, name: &str) -> Result<(), CoreError> {
        crate::names::check("key", name)?;
        Ok(self.store.remove_key(name)?)
    }

    pub fn grants(&self, app: &str) -> Result<Vec<AccessRow>, CoreError> {
        Ok(self.store.list_access(app)?)
    }

    pub fn grant(&self, g: NewGrant) -> Result<(), CoreError> {
        crate::names::check("key", g.key)?;
        Ok(self
            .store
            .set_access(g.app, g.key, g.role, g.tags, g.allow_retag)?)
    }

    pub fn revoke(&self, app: &str, key: &str) -> Result<(), CoreError> {
        crate::names::check("key", key)?;
        Ok(self.store.revoke_access(app, key)?)
    }

    /// The last `n` entries of the trail, of one app or of the whole server. An app's trail
    /// starts when it was created: an earlier app of the same name, destroyed since, was
    /// someone else's (its rows stay in the server-wide trail).
    pub fn audit_trail(&self, app: Option<&str>, n: i64) -> Result<Vec<AuditRow>, CoreError> {
        let mut rows = self.store.list_audit(app, n)?;
        if let Some(a) = app.and_then(|a| self.store.app(a).ok().flatten()) {
            rows.retain(|r| r.at >= a.created_at);
        }
        Ok(rows)
    }
}
