//! Filesystem trees: a layer's tar stream read as real tools write it
//! ([`tarstream`]), classified into changes ([`layer`]), merged with the
//! OCI rules into one tree and planned for writing ([`tree`]); or a
//! directory on disk scanned into the same plan ([`scan`]); where the
//! content of a plan's files comes from ([`content`]); the kinds of node
//! every stage shares ([`node`]); thread counts and helpers ([`threads`]);
//! seek points in a gzip layer, to read it from the middle ([`gzindex`]).

pub mod content;
pub mod gzindex;
pub mod layer;
pub mod node;
pub mod scan;
pub mod tarstream;
pub mod threads;
pub mod tree;
