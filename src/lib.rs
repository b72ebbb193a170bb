//! flmount: container images as live filesystems.
//!
//! The pipeline, one module per stage (see DESIGN.md):
//! [`reference`] names an image, [`registry`] talks to where it lives,
//! [`manifest`] understands what it is made of, [`workdir`] keeps its
//! verified content, [`pull`] puts those together, and [`cli`] is the
//! command line over all of it.

pub mod admin;
pub mod app;
pub mod chunkcache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod digest;
pub mod export;
pub mod extract;
pub mod flist;
pub mod fuse;
pub mod inventory;
pub mod layer;
pub mod manifest;
pub mod overlay;
pub mod owned;
pub mod pack;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod scan;
pub mod source;
pub mod store;
pub mod tarstream;
pub mod tree;
pub mod workdir;
