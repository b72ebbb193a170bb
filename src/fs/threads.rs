//! How many threads work takes, and running it on them: the helpers the
//! content sources, the layer reader and the packers share.

use std::sync::atomic::Ordering;

use anyhow::{anyhow, Result};

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Threads for work that waits on I/O as much as it computes (creating
/// files, encoding and storing chunks): two per core, between 4 and 16.
pub fn io_workers() -> usize {
    cores().clamp(2, 8) * 2
}

/// Runs `work` on every item with `threads` threads taking items in turn;
/// the first error stops each thread at its next item and is returned.
pub fn for_each_parallel<T: Sync>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                        work(item)?;
                    }
                    Ok(())
                })
            })
            .collect();
        join_all(handles)
    })
}

/// Waits for every thread; the first error wins.
pub fn join_all(handles: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    let mut first = Ok(());
    for h in handles {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(anyhow!("a worker thread panicked")));
        if first.is_ok() {
            first = r;
        }
    }
    first
}
