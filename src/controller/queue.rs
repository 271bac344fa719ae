//! Per-app serialization and cross-app parallelism for builds. Pushes to one app wait their
//! turn (and are told their place); builds of different apps run at once up to a limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Per app: the lock builds take turns on, and how many hold or wait for it.
type AppSlot = (Arc<tokio::sync::Mutex<()>>, usize);

pub struct BuildQueue {
    apps: Mutex<HashMap<String, AppSlot>>,
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<String, (i64, CancellationToken)>>,
}

/// Holds an app's turn; the waiting count drops with it.
pub struct AppTurn<'a> {
    q: &'a BuildQueue,
    app: String,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for AppTurn<'_> {
    fn drop(&mut self) {
        let mut apps = self.q.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = apps.get_mut(&self.app) {
            e.1 -= 1;
            if e.1 == 0 {
                apps.remove(&self.app);
            }
        }
    }
}

pub struct Running<'a> {
    q: &'a BuildQueue,
    app: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.q
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.app);
    }
}

impl BuildQueue {
    pub fn new(parallel: usize) -> BuildQueue {
        BuildQueue {
            apps: Mutex::default(),
            slots: Arc::new(Semaphore::new(parallel.max(1))),
            running: Mutex::default(),
        }
    }

    /// How many builds of `app` are running or waiting.
    pub fn waiting(&self, app: &str) -> usize {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .map_or(0, |e| e.1)
    }

    pub async fn app_turn(&self, app: &str) -> AppTurn<'_> {
        let m = {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            let e = apps
                .entry(app.to_string())
                .or_insert_with(|| (Arc::default(), 0));
            e.1 += 1;
            e.0.clone()
        };
        // Registered before waiting, so a dropped (cancelled) waiter is still counted down.
        let mut turn = AppTurn {
            q: self,
            app: app.to_string(),
            _guard: Arc::new(tokio::sync::Mutex::new(())).lock_owned().await,
        };
        turn._guard = m.lock_owned().await;
        turn
    }

    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed")
    }

    pub fn running(&self, app: &str, id: i64, cancel: CancellationToken) -> Running<'_> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_string(), (id, cancel));
        Running {
            q: self,
            app: app.to_string(),
        }
    }

    /// Cancel the running build of `app`; returns its id.
    pub fn cancel(&self, app: &str) -> Option<i64> {
        let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        r.get(app).map(|(id, tok)| {
            tok.cancel();
            *id
        })
    }
}
