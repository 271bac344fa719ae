//! The controller's data directory layout (see DESIGN.md). Every path is built here, from
//! names that already passed `names::check`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("magrathea.db")
    }
    pub fn host_key(&self) -> PathBuf {
        self.root.join("host_ed25519")
    }
    pub fn client_key(&self) -> PathBuf {
        self.root.join("controller_ed25519")
    }
    pub fn repos(&self) -> PathBuf {
        self.root.join("repos")
    }
    pub fn repo(&self, app: &str) -> PathBuf {
        self.repos().join(format!("{app}.git"))
    }
    pub fn hooks(&self) -> PathBuf {
        self.root.join("hooks")
    }
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn hook_socket(&self) -> PathBuf {
        self.run().join("hook.sock")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn cache(&self, app: &str) -> PathBuf {
        self.root.join("cache").join(app)
    }
    pub fn builds(&self) -> PathBuf {
        self.root.join("builds")
    }
    pub fn buildpacks(&self) -> PathBuf {
        self.root.join("buildpacks")
    }
    pub fn releases(&self, app: &str) -> PathBuf {
        self.root.join("releases").join(app)
    }
    /// A service's sealed backups (`backup/`).
    pub fn backups(&self, service: &str) -> PathBuf {
        self.root.join("backups").join(service)
    }
}
