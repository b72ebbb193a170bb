//! Images: naming one ([`reference`], [`digest`]), understanding what it
//! is made of ([`manifest`]), fetching it from a registry ([`registry`]) or
//! a local source ([`source`]) into the verified cache ([`workdir`]);
//! [`pull`] puts those together; [`error`] classifies what goes wrong.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod source;
pub mod workdir;
