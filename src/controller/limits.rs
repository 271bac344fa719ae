//! Server-wide limits (`magrathea serve --build-*`, `--process-memory`): the controller
//! holds them and hands each pipeline the part it needs.

use std::time::Duration;

/// Server-wide build limits (`magrathea serve --build-*`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    pub memory: i64,
    pub max_slug: u64,
    /// The most an app's build cache may hold.
    pub max_cache: u64,
    pub network: String,
    pub parallel: usize,
    pub default_stack: String,
    /// Memory limit of each app process.
    pub process_memory: i64,
    /// The shortest `backup: { every }` a magrathea.yml may ask for, in seconds
    /// (`serve --min-backup-interval`; a minute, lower only for tests).
    pub min_backup_interval: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(15 * 60),
            memory: 2 << 30,
            max_slug: 500 << 20,
            max_cache: 1 << 30,
            network: "app".into(),
            parallel: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            default_stack: "bookworm".into(),
            process_memory: 512 << 20,
            min_backup_interval: 60,
        }
    }
}
