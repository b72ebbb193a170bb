//! flists: the rfs-compatible SQLite format ([`format`]), also read a
//! directory at a time ([`rows`]); packing a tree's
//! content into chunk stores and reading it back ([`pack`]); the readers'
//! chunk cache ([`chunkcache`]); serving an flist through FUSE ([`fuse`]);
//! and the commands over them ([`commands`]).

pub mod chunkcache;
pub mod commands;
pub mod fetch;
pub mod format;
pub mod fuse;
pub mod pack;
pub mod rows;
pub mod sql;
pub mod trace;
