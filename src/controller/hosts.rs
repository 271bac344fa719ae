//! What the pipelines below the controller (`build/`, `deploy/`) ask of it, implemented by
//! [`Core`]. They name these traits, never the controller, so imports point one way.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Core;
use crate::build::BuildError;
use crate::deploy::DeployError;
use crate::node::client::NodeClient;
use crate::paths::DataDir;
use crate::router::Router;
use crate::store::{NodeRow, Store, StoreError};

impl crate::build::Host for Core {
    fn data(&self) -> &DataDir {
        &self.data
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn instance(&self) -> &str {
        &self.instance
    }

    fn limits(&self) -> crate::build::BuildLimits {
        crate::build::BuildLimits {
            timeout: self.limits.timeout,
            memory: self.limits.memory,
            max_slug: self.limits.max_slug,
            max_cache: self.limits.max_cache,
            network: self.limits.network.clone(),
            default_stack: self.limits.default_stack.clone(),
        }
    }

    fn app_uid(&self, app: &str) -> Result<u32, BuildError> {
        Core::app_uid(self, app).map_err(|e| BuildError::Failed(e.to_string()))
    }

    fn config(&self, app: &str, env: &str) -> Result<BTreeMap<String, String>, BuildError> {
        Core::config(self, app, env).map_err(|e| BuildError::Failed(e.to_string()))
    }

    fn waiting(&self, app: &str) -> usize {
        self.queue.waiting(app)
    }

    async fn turn<'a>(
        &'a self,
        app: &'a str,
        id: i64,
        cancel: CancellationToken,
    ) -> Option<Box<dyn Send + 'a>> {
        let turn = tokio::select! {
            g = self.queue.app_turn(app) => g,
            _ = cancel.cancelled() => return None,
        };
        let slot = tokio::select! {
            p = self.queue.slot() => p,
            _ = cancel.cancelled() => return None,
        };
        let running = self.queue.running(app, id, cancel);
        // Fields drop in order: the build stops being "running" before its slot and its
        // app's turn go to the next one.
        Some(Box::new((running, slot, turn)))
    }
}

impl crate::deploy::Host for Core {
    fn data(&self) -> &DataDir {
        &self.data
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn router(&self) -> &Router {
        &self.router
    }

    fn deploy_lock(&self, app: &str, env: &str) -> Arc<tokio::sync::Mutex<()>> {
        Core::deploy_lock(self, app, env)
    }

    fn config(&self, app: &str, env: &str) -> Result<BTreeMap<String, String>, DeployError> {
        Core::config(self, app, env).map_err(|e| DeployError::Failed(e.to_string()))
    }

    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        self.sealer.seal(plain)
    }

    fn app_uid(&self, app: &str) -> Result<u32, DeployError> {
        Core::app_uid(self, app).map_err(|e| DeployError::Failed(e.to_string()))
    }

    fn process_memory(&self) -> i64 {
        self.limits.process_memory
    }

    fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.all_nodes()
    }

    fn target_nodes(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<NodeRow>, StoreError> {
        Core::target_nodes(self, selector)
    }

    fn node_client(&self, node: &NodeRow) -> NodeClient {
        Core::node_client(self, node)
    }

    async fn reach_services<'a>(
        &'a self,
        app: &'a str,
        env: &'a str,
        nodes: &'a [String],
        image: &'a str,
    ) -> Result<(), DeployError> {
        Core::reach_services(self, app, env, nodes, image)
            .await
            .map_err(|e| DeployError::Failed(e.to_string()))
    }

    async fn backup_linked<'a>(
        &'a self,
        app: &'a str,
        env: &'a str,
        version: i64,
        out: &'a mut crate::sink::Sink,
    ) -> Result<(), DeployError> {
        Core::backup_linked(self, app, env, version, out)
            .await
            .map_err(|e| DeployError::Failed(e.to_string()))
    }
}
