//! flists: the rfs-compatible SQLite format ([`format`]), also read a
//! directory at a time ([`rows`]); packing a tree's
//! content into chunk stores and reading it back ([`pack`]), with the
//! workdir's index of what the stores hold ([`known`]) and what a pack
//! keeps on disk meanwhile ([`spill`]); the readers'
//! chunk cache ([`chunkcache`]); serving an flist through FUSE ([`fuse`]);
//! an image's seek index, an flist of spans of its own layer blobs
//! ([`seekindex`]), and the layers as the store it reads ([`layerstore`]);
//! and the commands over them ([`commands`]).

pub mod chunkcache;
pub mod commands;
pub mod fetch;
pub mod format;
pub mod fuse;
pub mod known;
pub mod layerstore;
pub mod pack;
pub mod rows;
pub mod seekindex;
pub mod spill;
pub mod sql;
pub mod trace;
