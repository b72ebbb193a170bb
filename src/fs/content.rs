//! Where the content of a plan's regular files comes from: the
//! [`ContentSource`] trait that every writer reads through (layer blobs
//! here, a directory in `scan`, an flist's chunks in `flist::pack`).

use std::io::Read;

use anyhow::{anyhow, bail, Result};

use crate::fs::layer::{Change, LayerBlob};
use crate::fs::tree::Plan;

/// Where the content of a plan's regular files comes from.
pub trait ContentSource: Sync {
    /// Calls `sink(i, reader)` for every inode `i` of `plan` whose content
    /// this source holds (`reader` yields exactly its size), from any
    /// number of threads. Stops at the first error `sink` returns.
    fn deliver(&self, plan: &Plan, sink: &(dyn Fn(usize, &mut dyn Read) -> Result<()> + Sync)) -> Result<()>;
}

/// Content from layer blobs: one reader thread per layer, each stopping as
/// soon as it has passed its last wanted entry.
pub struct LayerContent<'a>(pub &'a [LayerBlob]);

impl ContentSource for LayerContent<'_> {
    fn deliver(&self, plan: &Plan, sink: &(dyn Fn(usize, &mut dyn Read) -> Result<()> + Sync)) -> Result<()> {
        let sources: Vec<_> = plan.sources().into_iter().collect();
        // One thread per layer: they are read concurrently.
        crate::fs::threads::for_each_parallel(&sources, sources.len(), |(layer, wanted)| {
            walk_wanted(&self.0[*layer], wanted, |index, entry, reader| {
                let sparse = matches!(entry.kind, crate::fs::layer::Kind::File { sparse: true, .. });
                with_holes(sparse, || sink(index, reader))
            })
        })
    }
}

/// Reads `blob` for the entries `wanted` names (entry index in the layer ->
/// inode index in the plan), handing each to `f` with its content, and
/// stops as soon as the last one was handed over. The one walk over a
/// layer for a plan's content (extraction, the tar export).
pub fn walk_wanted(
    blob: &LayerBlob,
    wanted: &std::collections::HashMap<u32, usize>,
    mut f: impl FnMut(usize, &crate::fs::layer::Entry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut remaining = wanted.len();
    if remaining == 0 {
        return Ok(());
    }
    let result = blob.for_each(|change, reader| {
        let Change::Add(entry) = change else { return Ok(()) };
        let Some(&index) = wanted.get(&entry.index) else {
            return Ok(());
        };
        f(index, &entry, reader)?;
        remaining -= 1;
        if remaining == 0 {
            bail!(Finished);
        }
        Ok(())
    });
    match result {
        Err(e) if e.is::<Finished>() && remaining == 0 => Ok(()),
        Err(e) if e.is::<Finished>() => Err(e),
        Err(e) => Err(e.context(format!("reading layer {}", blob.path.display()))),
        Ok(()) if remaining > 0 => Err(anyhow!(
            "layer {} ended before {remaining} of its files were found",
            blob.path.display()
        )),
        Ok(()) => Ok(()),
    }
}

thread_local! {
    /// Whether the content a source hands over on this thread may keep
    /// holes (see [`with_holes`]).
    static HOLES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a sink call) with blocks of zeros in the content delivered
/// left as holes, or written (the default): holes are kept where the
/// content says so (a sparse tar entry, an flist's chunks), and nowhere
/// else, so a plain file of zeros takes its space as with `tar -x`.
pub fn with_holes<T>(holes: bool, f: impl FnOnce() -> T) -> T {
    let before = HOLES.replace(holes);
    let out = f();
    HOLES.set(before);
    out
}

/// A content source whose files keep their holes: blocks of zeros are
/// skipped (an flist's all-zero chunks and a sparse file's holes).
pub struct KeepHoles<'a>(pub &'a dyn ContentSource);

impl ContentSource for KeepHoles<'_> {
    fn deliver(&self, plan: &Plan, sink: &(dyn Fn(usize, &mut dyn Read) -> Result<()> + Sync)) -> Result<()> {
        self.0
            .deliver(plan, &|i, reader| with_holes(true, || sink(i, reader)))
    }
}

/// Whether the sink running on this thread keeps blocks of zeros as holes.
pub fn holes_wanted() -> bool {
    HOLES.get()
}

/// Ends a layer reader early: it found everything, or another thread failed.
#[derive(Debug)]
pub struct Finished;
impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("layer reader finished early")
    }
}
impl std::error::Error for Finished {}
