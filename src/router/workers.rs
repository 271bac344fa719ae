//! The router's worker threads, nginx's model: one single-threaded tokio runtime per core.
//! The listeners accept on whatever runtime called `serve` (once per connection) and hand
//! each connection to the worker with the fewest open ones; from then on everything the
//! connection does (its requests, HTTP/2 streams, upgrades, the upstream connections it
//! drives) runs on that one thread. No request crosses threads: no work stealing, no
//! cross-thread wake-ups, and the per-worker shards (upstream pools, traffic counters)
//! are only ever touched by their own thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// This thread's shard: 1..=workers on a worker thread, 0 anywhere else.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Shards of per-worker state: one per worker, and one for every other thread.
pub(super) fn shards() -> usize {
    count() + 1
}

/// The calling thread's shard, below [`shards`].
pub(super) fn shard() -> usize {
    SHARD.with(Cell::get)
}

/// Worker threads: one per core.
fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Keeps `T` on a cache line of its own, so shards written by different threads do not
/// invalidate each other's lines.
#[repr(align(128))]
#[derive(Default)]
pub(super) struct Padded<T>(pub T);

struct Worker {
    handle: Handle,
    /// Connections it serves now, for picking the least busy.
    open: Arc<AtomicUsize>,
}

pub(super) struct Workers {
    workers: Vec<Worker>,
    /// Ends the threads (when the router goes away).
    stop: CancellationToken,
}

/// A connection's place on a worker, given back on drop.
pub(super) struct Placed(Arc<AtomicUsize>);

impl Drop for Placed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    pub(super) fn start() -> Workers {
        let stop = CancellationToken::new();
        let workers = (1..=count())
            .map(|shard| {
                let (tx, rx) = std::sync::mpsc::channel();
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("router-{shard}"))
                    .spawn(move || {
                        SHARD.with(|s| s.set(shard));
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a router worker runtime");
                        let _ = tx.send(rt.handle().clone());
                        rt.block_on(stop.cancelled());
                    })
                    .expect("a router worker thread");
                Worker {
                    handle: rx.recv().expect("the worker's runtime"),
                    open: Arc::default(),
                }
            })
            .collect();
        Workers { workers, stop }
    }

    /// The worker with the fewest open connections, counting the one being placed.
    pub(super) fn place(&self) -> (&Handle, Placed) {
        let w = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        w.open.fetch_add(1, Ordering::Relaxed);
        (&w.handle, Placed(Arc::clone(&w.open)))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
