//! SIGINT, SIGTERM and SIGHUP while flmount works (extracting, packing,
//! preparing overlay layers): the work is told to stop ([`check`] fails
//! with [`Interrupted`] at its next step), its temporaries are removed as
//! it unwinds, and the process exits with 128 + the signal's number. A
//! temporary still registered after a grace period is removed by the
//! watcher itself. With nothing registered the process exits at once
//! (a download in progress is kept in the workdir and resumed later).
//!
//! A FUSE server watches signals itself (they unmount): drop the
//! [`Watch`] before serving.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::FileId;

/// The signal that interrupted the work (0: none yet).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static TEMPORARIES: Mutex<Vec<(PathBuf, FileId)>> = Mutex::new(Vec::new());

/// How long the work has to unwind before the watcher removes what is left.
const GRACE: Duration = Duration::from_secs(20);

/// The work was interrupted by a signal (exit code 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Whether a signal asked the work to stop.
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::Relaxed) != 0
}

/// The exit code for an interrupted run: 128 + the signal's number.
pub fn exit_code() -> u8 {
    (128 + SIGNAL.load(Ordering::Relaxed).clamp(1, 127)) as u8
}

/// Fails with [`Interrupted`] once a signal asked the work to stop.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Steps that must not be cut in two (a mount and its record) in progress.
static CRITICAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// While it lives, a signal waits (up to the grace period) before the
/// process exits.
pub struct Critical(());

/// Enters a step that a signal must not cut in two.
pub fn critical() -> Critical {
    CRITICAL.fetch_add(1, Ordering::SeqCst);
    Critical(())
}

impl Drop for Critical {
    fn drop(&mut self) {
        CRITICAL.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Registers a temporary (`id` is what it is now) for removal on a signal.
pub fn register(path: &Path, id: FileId) {
    TEMPORARIES.lock().unwrap().push((path.to_owned(), id));
}

/// The temporary at `path` is gone or has become an output.
pub fn unregister(path: &Path) {
    TEMPORARIES.lock().unwrap().retain(|(p, _)| p != path);
}

/// Watches for the signals while it lives (inside a tokio runtime).
pub struct Watch(Option<tokio::task::JoinHandle<()>>);

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Starts watching. Outside a runtime (unit tests), does nothing.
pub fn watch() -> Watch {
    use tokio::signal::unix::{signal, SignalKind};
    if tokio::runtime::Handle::try_current().is_err() {
        return Watch(None);
    }
    let kinds = [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
    ];
    let mut streams = Vec::new();
    for (kind, number) in kinds {
        match signal(kind) {
            Ok(s) => streams.push((s, number)),
            Err(e) => tracing::warn!("cannot watch for signals: {e}"),
        }
    }
    Watch(Some(tokio::spawn(async move {
        let waits = streams.iter_mut().map(|(s, n)| {
            let n = *n;
            Box::pin(async move {
                s.recv().await;
                n
            })
        });
        let (number, _, _) = futures_util::future::select_all(waits).await;
        SIGNAL.store(number, Ordering::SeqCst);
        let _ = tokio::task::spawn_blocking(move || finish(number)).await;
    })))
}

/// Waits for the work to remove its temporaries, removes what is left,
/// and exits.
fn finish(number: i32) -> ! {
    let deadline = Instant::now() + GRACE;
    if !TEMPORARIES.lock().unwrap().is_empty() {
        tracing::warn!("interrupted: stopping and removing temporary files");
    }
    let busy = || !TEMPORARIES.lock().unwrap().is_empty() || CRITICAL.load(Ordering::SeqCst) > 0;
    while busy() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (path, id) in TEMPORARIES.lock().unwrap().drain(..) {
        super::remove_if_same(&path, id);
    }
    std::process::exit(128 + number)
}
