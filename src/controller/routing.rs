//! What the router serves besides `APP.DOMAIN`: custom domains, certificates and each
//! environment's routing settings. The store is the truth; after every change (and at
//! start, and when a route appears or goes: [`Core::follow_routes`])
//! [`Core::refresh_routing`] hands the router the whole picture: hosts, policies and the SNI
//! certificate table.
//!
//! Certificates come from the owner (`certs:add`) or from ACME; both go through
//! [`Core::install_cert`], which checks the bundle, seals the key and refreshes the router.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::{Core, CoreError};
use crate::deploy::route_key;
use crate::names::HostName;
use crate::router::certs::{self, Bundle};
use crate::router::tls::CertTable;
use crate::router::RoutePolicy;
use crate::store::{CertRow, DomainRow, RouteSettings};

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    /// Given by the owner (`certs:add`).
    Given,
    /// Issued through ACME.
    Acme,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Given => "given",
            CertSource::Acme => "acme",
        }
    }
}

/// One certificate of an app, as `certs` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    #[serde(flatten)]
    pub row: CertRow,
    /// The app's hosts this certificate answers for right now (SNI).
    pub serving: Vec<String>,
}

impl Core {
    /// An app's custom domains, every environment.
    pub fn domains(&self, app: &str) -> Result<Vec<DomainRow>, CoreError> {
        Ok(self
            .store
            .all_domains()?
            .into_iter()
            .filter(|d| d.app == app)
            .collect())
    }

    /// The default host of an app's environment (`APP.DOMAIN`, `APP-ENV.DOMAIN`).
    pub fn default_host(&self, app: &str, env: &str) -> String {
        format!("{}.{}", route_key(app, env), self.router.domain())
    }

    /// Adds hosts to an app's environment (all or none). Names under the server's own
    /// domain are the apps' default hosts and cannot be claimed.
    pub fn add_domains(
        &self,
        app: &str,
        env: &str,
        hosts: &[HostName],
    ) -> Result<usize, CoreError> {
        let domain = self.router.domain();
        for h in hosts {
            let under = h.strip_prefix("*.").unwrap_or(h);
            if under == domain || under.ends_with(&format!(".{domain}")) {
                return Err(CoreError::Invalid(format!(
                    "{h} is under {domain}, where apps answer by their own name ({}); add a host of your own domain",
                    self.default_host(app, env)
                )));
            }
        }
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let added = self.store.add_domains(app, env, &hosts)?;
        self.refresh_routing()?;
        Ok(added)
    }

    pub fn remove_domains(
        &self,
        app: &str,
        env: &str,
        hosts: &[HostName],
    ) -> Result<(), CoreError> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        self.store.remove_domains(app, env, &hosts)?;
        self.refresh_routing()?;
        Ok(())
    }

    pub fn clear_domains(&self, app: &str, env: &str) -> Result<usize, CoreError> {
        let n = self.store.clear_domains(app, env)?;
        self.refresh_routing()?;
        Ok(n)
    }

    pub fn route_settings(&self, app: &str, env: &str) -> Result<RouteSettings, CoreError> {
        Ok(self.store.route_settings(app, env)?)
    }

    pub fn set_route_settings(
        &self,
        app: &str,
        env: &str,
        s: &RouteSettings,
    ) -> Result<(), CoreError> {
        self.store.set_route_settings(app, env, s)?;
        self.refresh_routing()?;
        Ok(())
    }

    /// An app's certificates, with the hosts each answers for now.
    pub fn certs(&self, app: &str) -> Result<Vec<CertInfo>, CoreError> {
        let serving = self.router.certs().hosts();
        let fingerprints = self.serving_fingerprints(&serving);
        Ok(self
            .store
            .certs(app)?
            .into_iter()
            .map(|row| CertInfo {
                serving: fingerprints
                    .iter()
                    .filter(|(_, fp)| **fp == row.fingerprint)
                    .map(|(h, _)| h.clone())
                    .collect(),
                row,
            })
            .collect())
    }

    /// Checks a PEM bundle (chain and key) for `app`, stores it (the key sealed) and
    /// serves it. Refused, with one line saying why, when the key is not the
    /// certificate's, the certificate is expired or not yet valid, or it names none of
    /// the app's hosts (custom domains and its default ones). A certificate of the same
    /// source for the same names is replaced (a renewal).
    pub fn install_cert(
        &self,
        app: &str,
        source: CertSource,
        pem: &[u8],
    ) -> Result<CertInfo, CoreError> {
        let bundle = certs::parse_bundle(pem).map_err(|e| CoreError::Invalid(e.to_string()))?;
        certs::check_dates(&bundle, crate::timefmt::now())
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let hosts = self.app_hosts(app)?;
        if !hosts.iter().any(|h| certs::covers(&bundle.names, h)) {
            return Err(CoreError::Invalid(format!(
                "the certificate is for {} and matches none of {app}'s domains ({}); add the domain first: domains:add {app} HOST",
                bundle.names.join(", "),
                hosts.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let row = CertRow {
            id: 0,
            app: app.to_string(),
            source: source.as_str().to_string(),
            names: bundle.names.clone(),
            not_before: bundle.not_before,
            not_after: bundle.not_after,
            chain: bundle.chain_pem.clone(),
            key_sealed: self.sealer.seal(bundle.key_pem.as_bytes()),
            fingerprint: bundle.fingerprint.clone(),
            added_at: crate::timefmt::now(),
        };
        let id = self.store.put_cert(&row)?;
        self.refresh_routing()?;
        self.certs(app)?
            .into_iter()
            .find(|c| c.row.id == id)
            .ok_or_else(|| CoreError::NotFound(format!("certificate {id} of {app} is gone")))
    }

    pub fn remove_cert(&self, app: &str, id: i64) -> Result<(), CoreError> {
        self.store.remove_cert(app, id)?;
        self.refresh_routing()?;
        Ok(())
    }

    /// Hands the router everything it serves besides `APP.DOMAIN`, from the store: custom
    /// hosts, each environment's policy, and the SNI table. Called at start and after each
    /// change. A stored certificate that no longer opens (a replaced `config.key`) is left
    /// out and logged, never fatal.
    pub fn refresh_routing(&self) -> Result<(), CoreError> {
        // One at a time, so a refresh that read the store earlier never hands the router
        // its older picture after a later one.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let domains = self.store.all_domains()?;
        self.router.set_domains(
            domains
                .iter()
                .map(|d| (d.host.clone(), route_key(&d.app, &d.env))),
        );
        let policies = self
            .store
            .all_route_settings()?
            .into_iter()
            .map(|(app, env, s)| {
                (
                    route_key(&app, &env),
                    RoutePolicy::new(s.force_https, s.hsts, s.max_body),
                )
            })
            .collect();
        self.router.set_policies(policies);
        let mut loaded = vec![];
        for row in self.store.all_certs()? {
            match self.open_cert(&row) {
                Ok(key) => loaded.push((row, key)),
                Err(e) => {
                    tracing::error!(app = %row.app, id = row.id, error = %e, "stored certificate cannot be loaded; not served")
                }
            }
        }
        let mut hosts: HashMap<String, BTreeSet<String>> = HashMap::new();
        for d in &domains {
            hosts
                .entry(d.app.clone())
                .or_default()
                .insert(d.host.clone());
        }
        for l in self.store.all_live()? {
            hosts
                .entry(l.app.clone())
                .or_default()
                .insert(self.default_host(&l.app, &l.env));
        }
        for (row, _) in &loaded {
            hosts
                .entry(row.app.clone())
                .or_default()
                .insert(self.default_host(&row.app, "production"));
        }
        self.router
            .certs()
            .replace(cert_table(&hosts, &domains, &loaded));
        Ok(())
    }

    /// Keeps the SNI table's default hosts (`APP.DOMAIN`, `APP-ENV.DOMAIN`) in step with
    /// the live route table: whenever a route appears or goes (a first deploy to an
    /// environment, a destroy, routes restored at start), everything the router serves
    /// besides `APP.DOMAIN` is handed over again from the store. Runs until shutdown.
    pub async fn follow_routes(self: Arc<Self>) {
        let shutdown = self.shutdown().clone();
        loop {
            tokio::select! {
                () = self.router.routes_changed() => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(e) = self.refresh_routing() {
                tracing::error!(error = %e, "cannot refresh the routing table");
            }
        }
    }

    fn open_cert(&self, row: &CertRow) -> Result<Arc<CertifiedKey>, CoreError> {
        let key = self
            .sealer
            .open(&row.key_sealed)
            .map_err(|e| CoreError::Other(e.into()))?;
        let mut pem = row.chain.clone().into_bytes();
        pem.extend_from_slice(&key);
        let b: Bundle = certs::parse_bundle(&pem).map_err(|e| CoreError::Invalid(e.to_string()))?;
        Ok(b.key)
    }

    /// Every host an app answers at: custom domains and default hosts.
    fn app_hosts(&self, app: &str) -> Result<BTreeSet<String>, CoreError> {
        let mut hosts: BTreeSet<String> = self.domains(app)?.into_iter().map(|d| d.host).collect();
        hosts.insert(self.default_host(app, "production"));
        for env in self.live_envs(app)? {
            hosts.insert(self.default_host(app, &env));
        }
        Ok(hosts)
    }

    /// The leaf fingerprint served for each of `hosts`.
    fn serving_fingerprints(&self, hosts: &[String]) -> Vec<(String, String)> {
        use sha2::Digest;
        hosts
            .iter()
            .filter_map(|h| {
                let key = self.router.certs().get(h)?;
                let leaf = key.cert.first()?;
                Some((h.clone(), hex::encode(sha2::Sha256::digest(leaf.as_ref()))))
            })
            .collect()
    }
}

/// Which certificate answers for which host. For each app's host (a custom domain, or a
/// default host), the app's certificate covering it that lasts longest; under a wildcard
/// domain, also each exact name of the app's certificates there, unless another app holds
/// that name. A certificate never answers for another app's host.
fn cert_table(
    hosts: &HashMap<String, BTreeSet<String>>,
    domains: &[DomainRow],
    certs: &[(CertRow, Arc<CertifiedKey>)],
) -> CertTable {
    let owner: HashMap<&str, &str> = domains
        .iter()
        .map(|d| (d.host.as_str(), d.app.as_str()))
        .collect();
    // Host -> the certificate that lasts longest (so a valid one over an expired one).
    let mut best: HashMap<String, (i64, Arc<CertifiedKey>)> = HashMap::new();
    let mut offer = |host: &str, row: &CertRow, key: &Arc<CertifiedKey>| {
        let rank = row.not_after;
        match best.get(host) {
            Some((r, _)) if *r >= rank => {}
            _ => {
                best.insert(host.to_string(), (rank, Arc::clone(key)));
            }
        }
    };
    for (row, key) in certs {
        let Some(app_hosts) = hosts.get(&row.app) else {
            continue;
        };
        for host in app_hosts {
            if certs::covers(&row.names, host) {
                offer(host, row, key);
            }
            if let Some(parent) = host.strip_prefix("*.") {
                for name in &row.names {
                    let under = name
                        .split_once('.')
                        .is_some_and(|(first, rest)| first != "*" && rest == parent);
                    let taken = owner.get(name.as_str()).is_some_and(|a| *a != row.app);
                    if under && !taken {
                        offer(name, row, key);
                    }
                }
            }
        }
    }
    best.into_iter().map(|(h, (_, k))| (h, k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(app: &str, names: &[&str], not_after: i64) -> (CertRow, Arc<CertifiedKey>) {
        let (leaf, _, key) = crate::router::certs::tests::issue(names, false);
        let b = certs::parse_bundle(format!("{leaf}{key}").as_bytes()).unwrap();
        let row = CertRow {
            id: 0,
            app: app.into(),
            source: "given".into(),
            names: b.names.clone(),
            not_before: 0,
            not_after,
            chain: String::new(),
            key_sealed: vec![],
            fingerprint: b.fingerprint.clone(),
            added_at: 0,
        };
        (row, b.key)
    }

    fn domain(host: &str, app: &str) -> DomainRow {
        DomainRow {
            host: host.into(),
            app: app.into(),
            env: "production".into(),
            added_at: 0,
        }
    }

    #[test]
    fn certificates_answer_only_for_their_apps_hosts() {
        let domains = vec![
            domain("www.a.test", "a"),
            domain("*.w.test", "a"),
            domain("b.w.test", "b"),
        ];
        let mut hosts: HashMap<String, BTreeSet<String>> = HashMap::new();
        for d in &domains {
            hosts
                .entry(d.app.clone())
                .or_default()
                .insert(d.host.clone());
        }
        let wild = cert("a", &["*.a.test", "*.w.test"], 100);
        let exact = cert("a", &["x.w.test", "b.w.test"], 200);
        let old = cert("a", &["www.a.test"], 50);
        let other = cert("b", &["www.a.test"], 500);
        let table = cert_table(&hosts, &domains, &[wild.clone(), exact.clone(), old, other]);
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["*.w.test", "www.a.test", "x.w.test"]);
        // The longest-lasting of a's certificates, never b's.
        assert!(Arc::ptr_eq(&table["www.a.test"], &wild.1));
        assert!(Arc::ptr_eq(&table["x.w.test"], &exact.1));
        assert!(Arc::ptr_eq(&table["*.w.test"], &wild.1));
    }
}
