//! Where the content of a plan's regular files comes from: the
//! [`ContentSource`] trait that every writer reads through (layer blobs
//! here, a directory in `scan`, an flist's chunks in `flist::pack`).

use std::io::Read;

use anyhow::{anyhow, bail, Result};

use std::collections::HashMap;

use crate::fs::layer::{Change, LayerBlob, SeekPoint};
use crate::fs::tree::Plan;

/// Where the content of a plan's regular files comes from.
pub trait ContentSource: Sync {
    /// Calls `sink(i, reader)` for every inode `i` of `plan` whose content
    /// this source holds (`reader` yields exactly its size), from any
    /// number of threads. Stops at the first error `sink` returns.
    fn deliver(&self, plan: &Plan, sink: &(dyn Fn(usize, &mut dyn Read) -> Result<()> + Sync)) -> Result<()>;
}

/// Content from layer blobs: one reader thread per layer, and several for
/// a large gzip layer whose seek points are known (each inflating its own
/// stretch of it from a checkpoint); each stops as soon as it has passed
/// its last wanted entry.
pub struct LayerContent<'a>(pub &'a [LayerBlob]);

/// A layer's tar stream is split for threads in stretches of at least this
/// much.
const STRETCH_BYTES: u64 = 16 << 20;

/// Part of a layer read by one thread: from a seek point (or the start)
/// to the next one's member.
struct Stretch<'a> {
    layer: usize,
    start: Option<&'a SeekPoint>,
    end: Option<&'a SeekPoint>,
}

impl ContentSource for LayerContent<'_> {
    fn deliver(&self, plan: &Plan, sink: &(dyn Fn(usize, &mut dyn Read) -> Result<()> + Sync)) -> Result<()> {
        let sources = plan.sources();
        let points: HashMap<usize, Vec<SeekPoint>> = (sources.keys())
            .map(|&layer| (layer, self.0[layer].seek_points().unwrap_or_default()))
            .collect();
        // Threads shared out by size: a layer gets as many as it has
        // shares of the whole (a small one, one; none beyond the cores).
        let size = |layer: &usize| points[layer].last().map_or(0, |p| p.member.1);
        let share = (sources.keys().map(size).sum::<u64>() / crate::fs::threads::cores() as u64).max(1);
        let mut stretches = Vec::new();
        for &layer in sources.keys() {
            let parts = size(&layer).div_ceil(share) as usize;
            let starts = split(&points[&layer], parts);
            if starts.len() > 1 {
                tracing::debug!(
                    "reading layer {} from {} places at once (its seek points)",
                    layer + 1,
                    starts.len()
                );
            }
            for (i, start) in starts.iter().enumerate() {
                stretches.push(Stretch {
                    layer,
                    start: *start,
                    end: starts.get(i + 1).copied().flatten(),
                });
            }
        }
        // Each stretch on a thread of its own: they are read concurrently.
        crate::fs::threads::for_each_parallel(&stretches, stretches.len(), |s| {
            let wanted = &sources[&s.layer];
            walk_stretch(
                &self.0[s.layer],
                s.start,
                s.end,
                wanted,
                |index, entry, reader| {
                    let sparse = matches!(entry.kind, crate::fs::layer::Kind::File { sparse: true, .. });
                    with_holes(sparse, || sink(index, reader))
                },
            )
        })
    }
}

/// Where to start up to `parts` threads in a layer with seek points
/// `points`: the start of the stream, then seek points about evenly apart
/// (none for a small layer).
fn split(points: &[SeekPoint], parts: usize) -> Vec<Option<&SeekPoint>> {
    let mut starts = vec![None];
    let Some(last) = points.last().filter(|_| parts > 1) else {
        return starts;
    };
    let each = (last.member.1 / parts.max(1) as u64).max(STRETCH_BYTES);
    let mut from = (0u32, 0u64);
    for p in points {
        if p.member.0 > from.0 && p.member.1 - from.1 >= each && last.member.1 - p.member.1 >= each / 2 {
            starts.push(Some(p));
            from = p.member;
        }
    }
    starts
}

/// Reads `blob` for the entries `wanted` names (entry index in the layer ->
/// inode index in the plan), handing each to `f` with its content, and
/// stops as soon as the last one was handed over. The one walk over a
/// layer for a plan's content (extraction, the tar export).
pub fn walk_wanted(
    blob: &LayerBlob,
    wanted: &HashMap<u32, usize>,
    f: impl FnMut(usize, &crate::fs::layer::Entry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    walk_stretch(blob, None, None, wanted, f)
}

/// As [`walk_wanted`], for the entries from seek point `start`'s member
/// (or the start) to `end`'s (or the end).
fn walk_stretch(
    blob: &LayerBlob,
    start: Option<&SeekPoint>,
    end: Option<&SeekPoint>,
    wanted: &HashMap<u32, usize>,
    mut f: impl FnMut(usize, &crate::fs::layer::Entry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let (first, from) = start.map_or((0, 0), |p| p.member);
    let end_index = end.map(|p| p.member.0);
    let inside = |i: u32| i >= first && end_index.is_none_or(|e| i < e);
    let mut remaining = wanted.keys().filter(|&&i| inside(i)).count();
    if remaining == 0 {
        return Ok(());
    }
    let reader = match start {
        Some(p) => blob.open_at(p)?,
        None => blob.open()?,
    };
    let result = blob.for_each_from(reader, first, |change, at, reader| {
        if let Some(end) = end.filter(|e| at.index >= e.member.0) {
            // The next stretch starts here: where its seek point says.
            if at.index != end.member.0 || from + at.header != end.member.1 {
                bail!("the layer's cached seek points do not match it");
            }
            bail!(Finished);
        }
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
