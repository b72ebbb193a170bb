//! flmount: container images as live filesystems.
//!
//! The crate is laid out as the pipeline runs, lowest layer first; a module
//! imports only from the layers below it (`docs/ARCHITECTURE.md` draws it):
//!
//! 1. [`owned`]: proof of ownership before anything is unmounted, replaced
//!    or removed; [`progress`]: progress bars and sizes; [`retry`]: the
//!    one backoff schedule;
//! 2. [`fs`]: reading layers (tar streams) into changes and merging them
//!    into one tree, or scanning a directory into one; [`store`]: chunk
//!    stores (dir, zdb, S3, HTTP), sharded and replicated;
//! 3. [`image`]: naming an image, fetching it from a registry or a local
//!    source into the verified workdir cache;
//! 4. [`write`]: materialising a tree: extraction, the tar export, the
//!    overlay layer directories and mount;
//! 5. [`flist`]: flists: the format, packing, unpacking, the chunk cache
//!    and FUSE serving;
//! 6. [`admin`], [`runtime`]: the workdir's inventory and its commands; the
//!    runtime hand-offs (runc bundle, LXC config);
//! 7. [`app`]: running validated settings; [`cli`]: the command line that
//!    builds them, and exit codes.

pub mod admin;
pub mod app;
pub mod cli;
pub mod flist;
pub mod fs;
pub mod image;
pub mod owned;
pub mod progress;
pub mod retry;
pub mod runtime;
pub mod store;
pub mod write;
