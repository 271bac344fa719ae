//! Size bounds a build must stay within while it runs: the slug (`/app`), the build cache
//! (`/cache`) and the buildpacks' metadata (`/meta`). They are measured every second during
//! the build, so a build that writes too much is stopped early with a clear message instead
//! of filling the controller's disk first (the slug is measured once more when it is done).

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Buildpacks write a few small files to `/meta` (process types, release YAML); each is read
/// with a 1 MiB cap, and all of them together stay far below this.
pub(crate) const MAX_META: u64 = 8 << 20;

/// How often the directories are measured while the build runs.
const EVERY: Duration = Duration::from_secs(1);

/// One directory a build writes and the most it may hold.
pub(crate) struct Bound {
    /// How the pusher knows it (`/app (the slug)`).
    pub what: &'static str,
    pub dir: PathBuf,
    pub limit: u64,
    /// What to do about it, if the pusher can do something (empty otherwise).
    pub hint: String,
}

/// The first bound `sizes` exceeds, as the message for the pusher.
fn exceeded(bounds: &[Bound]) -> Option<String> {
    bounds.iter().find_map(|b| {
        let size = super::dir_size(&b.dir);
        (size > b.limit).then(|| {
            format!(
                "build stopped: {} is {}, over the {} limit{}",
                b.what,
                super::human(size),
                super::human(b.limit),
                b.hint
            )
        })
    })
}

/// Measures `bounds` now and then every second until `stop` is cancelled (the build ended).
/// On the first bound exceeded it cancels `stop` itself, which stops the build container,
/// and returns why.
pub(crate) async fn watch(bounds: Vec<Bound>, stop: CancellationToken) -> Option<String> {
    let bounds = std::sync::Arc::new(bounds);
    loop {
        let b = bounds.clone();
        let over = tokio::task::spawn_blocking(move || exceeded(&b))
            .await
            .ok()
            .flatten();
        if let Some(m) = over {
            stop.cancel();
            return Some(m);
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_growing_past_its_bound_stops_the_build() {
        let d = tempfile::tempdir().unwrap();
        let bounds = vec![
            Bound {
                what: "/meta (buildpack metadata)",
                dir: d.path().join("meta"),
                limit: 10,
                hint: String::new(),
            },
            Bound {
                what: "/cache (the build cache)",
                dir: d.path().join("cache"),
                limit: 2048,
                hint: "; `builds:purge-cache app` empties it".into(),
            },
        ];
        std::fs::create_dir_all(d.path().join("cache/sub")).unwrap();
        std::fs::write(d.path().join("cache/sub/a"), [0u8; 1500]).unwrap();
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(watch(bounds, stop.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stop.is_cancelled(), "within bounds (no meta dir yet)");
        std::fs::write(d.path().join("cache/b"), [0u8; 1500]).unwrap();
        let why = tokio::time::timeout(Duration::from_secs(30), watcher)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            why.as_deref(),
            Some("build stopped: /cache (the build cache) is 2.9 KB, over the 2.0 KB limit; `builds:purge-cache app` empties it")
        );
        assert!(stop.is_cancelled());

        // The build ending first ends the watch, with nothing to say.
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(watch(vec![], stop.clone()));
        stop.cancel();
        assert_eq!(watcher.await.unwrap(), None);
    }
}
