//! Automatic certificates (`certs:auto:enable`): orders through ACME for an environment's
//! custom domains, HTTP-01 answered by the router, the result installed like a certificate
//! the owner gave (`Core::install_cert`: sealed key, served at once through SNI). A
//! scheduler task ([`renewals`]) renews each one a while before it expires
//! (`acme::renew_at`) and retries failures with exponential backoff (`acme::retry_delay`).
//! Every outcome is recorded (store: the last error and the next attempt, which `certs`,
//! `certs:auto` and `apps:info` show) and written to the app's event log (`logs`): a renewal
//! never fails silently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::routing::CertSource;
use super::{Core, CoreError, Sink};
use crate::acme::{self, AcmeOptions, Client};
use crate::store::AcmeRow;
use crate::timefmt::{now, utc};

/// Held while one environment's order runs.
type OrderLock = Arc<tokio::sync::Mutex<()>>;

/// The ACME side of the controller.
#[derive(Default)]
pub(crate) struct AcmeState {
    options: Mutex<AcmeOptions>,
    /// Wakes the scheduler when something became due earlier than it planned.
    wake: Notify,
    /// One order per environment at a time (the scheduler and a command may race).
    locks: Mutex<HashMap<(String, String), OrderLock>>,
}

/// The scheduler looks again at least this often (domains added meanwhile, a clock jump).
const RESCAN: Duration = Duration::from_secs(600);
/// Longest one order may take, account and validation included.
const ORDER_BOUND: Duration = Duration::from_secs(180);

impl Core {
    /// Where certificates come from (`serve --acme-*`); before the scheduler starts.
    pub fn set_acme(&self, o: AcmeOptions) {
        *self
            .acme
            .options
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = o;
    }

    fn acme_options(&self) -> AcmeOptions {
        self.acme
            .options
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The environments of `app` with automatic certificates, and their renewal state.
    pub fn acme_status(&self, app: &str) -> Result<Vec<AcmeRow>, CoreError> {
        Ok(self.store.acme_certs(Some(app))?)
    }

    /// The hosts of an environment an HTTP-01 order can cover: its custom domains, not
    /// wildcards.
    fn acme_domains(&self, app: &str, env: &str) -> Result<Vec<String>, CoreError> {
        let mut hosts: Vec<String> = self
            .domains(app)?
            .into_iter()
            .filter(|d| d.env == env && acme::orderable(&d.host))
            .map(|d| d.host)
            .collect();
        hosts.sort();
        hosts.dedup();
        Ok(hosts)
    }

    /// Turns automatic certificates on and orders the first one now. Refused, changing
    /// nothing, when the environment has no domain to order for. An order that fails
    /// leaves them on, retried with backoff, and says so.
    pub async fn acme_enable(
        &self,
        app: &str,
        env: &str,
        out: &mut Sink,
    ) -> Result<AcmeRow, CoreError> {
        if self.acme_domains(app, env)?.is_empty() {
            return Err(CoreError::Invalid(format!(
                "{app} has no custom domain in {env} that ACME can check over HTTP (wildcards need DNS); add one first: domains:add {app} HOST{}",
                env_flag(env)
            )));
        }
        self.store.acme_enable(app, env)?;
        self.acme_order(app, env, out).await
    }

    /// Orders a new certificate now (`certs:auto:refresh`), whatever the current one's age.
    pub async fn acme_refresh(
        &self,
        app: &str,
        env: &str,
        out: &mut Sink,
    ) -> Result<AcmeRow, CoreError> {
        if self.store.acme_cert(app, env)?.is_none() {
            return Err(CoreError::Invalid(format!(
                "automatic certificates are off for {app} in {env}; turn them on: certs:auto:enable {app}{}",
                env_flag(env)
            )));
        }
        self.acme_order(app, env, out).await
    }

    /// Turns automatic certificates off. The certificate issued last stays served until it
    /// expires or is removed (`certs:remove`).
    pub fn acme_disable(&self, app: &str, env: &str) -> Result<(), CoreError> {
        if !self.store.acme_disable(app, env)? {
            return Err(CoreError::Invalid(format!(
                "automatic certificates are not on for {app} in {env}"
            )));
        }
        self.acme_event(app, env, "automatic certificates turned off");
        Ok(())
    }

    /// One order, its outcome recorded; the row as it is afterwards, or the failure.
    async fn acme_order(&self, app: &str, env: &str, out: &mut Sink) -> Result<AcmeRow, CoreError> {
        let lock = self.acme_lock(app, env);
        let _held = lock.lock().await;
        self.acme_order_locked(app, env, out).await
    }

    /// The scheduler's order: only if still due once the lock is held (a command may have
    /// just ordered, or turned them off).
    async fn acme_order_if_due(&self, app: &str, env: &str, out: &mut Sink) {
        let lock = self.acme_lock(app, env);
        let _held = lock.lock().await;
        if let Ok(Some(row)) = self.store.acme_cert(app, env) {
            if due(self, &row, now()) {
                // The outcome is recorded and logged either way.
                let _ = self.acme_order_locked(app, env, out).await;
            }
        }
    }

    async fn acme_order_locked(
        &self,
        app: &str,
        env: &str,
        out: &mut Sink,
    ) -> Result<AcmeRow, CoreError> {
        let domains = self.acme_domains(app, env)?;
        out.line(format!(
            "-----> ordering a certificate for {} from {}",
            domains.join(", "),
            self.acme_options().directory
        ))
        .await;
        let result = match domains.is_empty() {
            true => Err(format!(
                "{app} has no custom domain left in {env} to order for"
            )),
            false => tokio::time::timeout(ORDER_BOUND, self.acme_issue(app, env, &domains))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the ACME server did not finish within {} s",
                        ORDER_BOUND.as_secs()
                    ))
                }),
        };
        // The next renewal or retry may be sooner than the scheduler planned to look.
        self.acme.wake.notify_one();
        let row = match result {
            Ok(row) => row,
            Err(error) => {
                let failures = self.store.acme_failed(app, env, &error, |n| {
                    now() + acme::retry_delay(n.clamp(1, 64) as u32)
                })?;
                let next = self.store.acme_cert(app, env)?.map(|r| r.next_attempt);
                let when = next.map_or_else(|| "never (turned off)".into(), utc);
                self.acme_event(
                    app,
                    env,
                    &format!(
                        "certificate order for {} FAILED ({failures} in a row): {error}; next attempt {when}",
                        domains.join(", ")
                    ),
                );
                tracing::warn!(app, env, failures, error = %error, "ACME order failed");
                return Err(CoreError::Failed(format!(
                    "the certificate order failed: {error}; next attempt {when}"
                )));
            }
        };
        out.line(format!(
            "-----> certificate issued, valid until {}; renewal from {}",
            row.not_after.map(utc).unwrap_or_default(),
            utc(row.next_attempt)
        ))
        .await;
        Ok(row)
    }

    /// The order itself: account, HTTP-01, certificate installed. An error is one line.
    async fn acme_issue(
        &self,
        app: &str,
        env: &str,
        domains: &[String],
    ) -> Result<AcmeRow, String> {
        let o = self.acme_options();
        let client = self.acme_client(&o).await.map_err(|e| e.to_string())?;
        let issued = match client.issue(domains, &*self.router).await {
            Ok(issued) => issued,
            Err(e) => {
                let e = e.to_string();
                // The CA no longer knows our account (deactivated, or a test CA restarted):
                // the next attempt registers a new one.
                if e.contains("accountDoesNotExist") {
                    let _ = self.store.forget_acme_account(&o.directory);
                }
                return Err(e);
            }
        };
        let mut pem = issued.chain_pem.clone().into_bytes();
        pem.extend_from_slice(issued.key_pem.as_bytes());
        self.install_cert(app, CertSource::Acme, &pem)
            .map_err(|e| format!("the issued certificate was not installed: {e}"))?;
        let next = acme::renew_at(issued.not_before, issued.not_after, o.renew_before);
        self.store
            .acme_issued(app, env, domains, issued.not_after, next)
            .map_err(|e| e.to_string())?;
        self.acme_event(
            app,
            env,
            &format!(
                "certificate issued for {} (valid until {}); renewal from {}",
                domains.join(", "),
                utc(issued.not_after),
                utc(next)
            ),
        );
        self.store
            .acme_cert(app, env)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "automatic certificates were turned off meanwhile".into())
    }

    /// Our account at the configured directory: registered once, its credentials (with
    /// its private key) kept sealed in the store.
    async fn acme_client(&self, o: &AcmeOptions) -> Result<Client, CoreError> {
        let saved = match self.store.acme_account(&o.directory)? {
            Some(blob) => Some(
                self.sealer
                    .open(&blob)
                    .map_err(|e| CoreError::Other(e.into()))?,
            ),
            None => None,
        };
        let (client, fresh) = Client::open(o, saved.as_deref())
            .await
            .map_err(|e| CoreError::Unavailable(e.to_string()))?;
        if let Some(creds) = fresh {
            self.store
                .set_acme_account(&o.directory, &self.sealer.seal(&creds))?;
        }
        Ok(client)
    }

    fn acme_lock(&self, app: &str, env: &str) -> OrderLock {
        self.acme
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((app.into(), env.into()))
            .or_default()
            .clone()
    }

    fn acme_event(&self, app: &str, env: &str, line: &str) {
        crate::eventlog::EventLog::open_labelled(&self.data.logs(), app, "certs", env).write(line);
    }
}

fn env_flag(env: &str) -> String {
    if env == "production" {
        String::new()
    } else {
        format!(" --env {env}")
    }
}

/// The scheduler: sleeps until the next renewal or retry is due (or a command wakes it),
/// then orders what is due, one at a time. Stops with the server.
pub async fn renewals(core: Arc<Core>) {
    let shutdown = core.shutdown().clone();
    loop {
        let rows = core.store.acme_certs(None).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the automatic certificates");
            vec![]
        });
        let t = now();
        for r in rows.iter().filter(|r| due(&core, r, t)) {
            if shutdown.is_cancelled() {
                return;
            }
            // Nobody watches a scheduled order: its lines go nowhere (a closed channel).
            let (tx, _) = tokio::sync::mpsc::channel::<String>(1);
            let mut quiet = Sink::new(tx);
            core.acme_order_if_due(&r.app, &r.env, &mut quiet).await;
        }
        let rows = core.store.acme_certs(None).unwrap_or_default();
        let next = rows.iter().map(|r| r.next_attempt).min();
        let wait = next.map_or(RESCAN, |at| {
            Duration::from_secs((at - now()).clamp(1, RESCAN.as_secs() as i64) as u64)
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = core.acme.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Due: its time has come, or the domains it covers are no longer the environment's.
fn due(core: &Core, r: &AcmeRow, t: i64) -> bool {
    if r.next_attempt <= t {
        return true;
    }
    // A changed domain list is ordered again at once, unless the last attempt failed (then
    // the backoff holds).
    r.failures == 0
        && core
            .acme_domains(&r.app, &r.env)
            .is_ok_and(|d| !d.is_empty() && d != r.domains)
}
