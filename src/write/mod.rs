//! Materialising a planned tree: into a directory, safely and in parallel
//! ([`extract`]); as a tar stream ([`export`]); as per-layer overlayfs
//! directories and an overlay mount ([`overlay`]).

pub mod export;
pub mod extract;
pub mod overlay;
