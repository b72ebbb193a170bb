//! The test bed for integration tests, one concern a module: real servers
//! on free loopback ports (a registry, chunk stores, a token issuer, fault
//! proxies), fixture layers and images (tar, OCI layouts, the shared
//! fixtures), the bed a test starts from, the flmount runner, mounts and
//! directory trees. Every server is killed and reaped on drop.
//!
//! Tests `use common::*` for what most of them need (re-exported here) and
//! name a module for the rest.

#![allow(dead_code)]

pub mod bed;
pub mod faults;
pub mod fixtures;
pub mod fstree;
pub mod host;
pub mod mounts;
pub mod oci;
pub mod registry;
pub mod run;
pub mod servers;
pub mod tarball;
pub mod tls;
pub mod token;

// Each test binary uses some of these, none uses them all.
#[allow(unused_imports)]
pub use self::{
    bed::Bed,
    faults::{Fault, FaultProxy},
    fixtures::pseudo_random,
    fstree::{bytes_under, files_under, largest_file, untar},
    host::{free_port, need, root_or_skip},
    mounts::mounted_at,
    oci::{sha256_hex, Compression, ImageSpec, Layout, PrebuiltLayer, Written},
    registry::{Registry, RegistryAuth},
    run::{as_nobody, run_measuring_memory, run_ok, s, Flmount},
};
