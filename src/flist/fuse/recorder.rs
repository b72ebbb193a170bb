//! What a mount's readers read, for start-up traces (`flist::trace`): each
//! chunk once, in the order first read; saved when the mount ends, 64 bytes
//! a chunk (id, key).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::store::ChunkRef;

/// Records the chunks a mount's readers ask for, each once, in order.
#[derive(Default)]
pub struct Recorder {
    state: Mutex<(HashSet<[u8; 32]>, Vec<ChunkRef>)>,
}

impl Recorder {
    pub fn record(&self, chunks: &[ChunkRef]) {
        let mut state = self.state.lock().unwrap();
        let (seen, order) = &mut *state;
        for chunk in chunks {
            if seen.insert(chunk.key) {
                order.push(*chunk);
            }
        }
    }

    /// Writes what was recorded to `path` (64 bytes a chunk: id, key).
    pub fn save(&self, path: &Path) -> Result<usize> {
        let state = self.state.lock().unwrap();
        let mut bytes = Vec::with_capacity(state.1.len() * 64);
        for chunk in &state.1 {
            bytes.extend_from_slice(&chunk.id);
            bytes.extend_from_slice(&chunk.key);
        }
        crate::owned::output::write(path, &bytes)?;
        Ok(state.1.len())
    }
}

/// Reads what [`Recorder::save`] wrote.
pub fn load(path: &Path) -> Result<Vec<ChunkRef>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading the trace {}", path.display()))?;
    if bytes.len() % 64 != 0 {
        bail!("the trace {} is cut short", path.display());
    }
    Ok(bytes
        .chunks_exact(64)
        .map(|r| ChunkRef {
            id: r[..32].try_into().expect("32 bytes"),
            key: r[32..].try_into().expect("32 bytes"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_once_each_in_order_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = |b: u8| ChunkRef {
            id: [b; 32],
            key: [b + 100; 32],
        };
        let r = Recorder::default();
        r.record(&[chunk(3), chunk(1)]);
        r.record(&[chunk(1), chunk(2), chunk(3)]);
        let path = dir.path().join("trace");
        assert_eq!(r.save(&path).unwrap(), 3);
        assert_eq!(load(&path).unwrap(), vec![chunk(3), chunk(1), chunk(2)]);
        std::fs::write(&path, [0u8; 65]).unwrap();
        assert!(load(&path).is_err(), "a cut record is an error");
    }
}
