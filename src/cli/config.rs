//! Defaults from configuration files: `/etc/flmount/config.toml`, then the
//! user's (`$XDG_CONFIG_HOME/flmount/config.toml`, or
//! `~/.config/flmount/config.toml`), the later overriding the earlier;
//! `FLMOUNT_CONFIG=FILE` names one file instead. Flags override both.
//!
//! ```toml
//! workdir = "/srv/flmount"
//! cache_size = "20G"                      # chunk cache of FUSE mounts and unpack
//! stores = ["dir:///srv/chunks"]          # -flist without -store packs here
//! insecure_registries = ["registry.lan:5000"]
//!
//! [mirrors]
//! "docker.io" = "mirror.lan:5000"         # tried first; the registry itself if it fails
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub workdir: Option<PathBuf>,
    pub cache_size: Option<String>,
    #[serde(default)]
    pub stores: Vec<String>,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Registry (as references name it, e.g. `docker.io`) -> mirror host.
    #[serde(default)]
    pub mirrors: BTreeMap<String, String>,
}

impl Config {
    /// The files read, in order.
    pub fn paths() -> Vec<PathBuf> {
        if let Some(one) = std::env::var_os("FLMOUNT_CONFIG") {
            return vec![PathBuf::from(one)];
        }
        let mut out = vec![PathBuf::from("/etc/flmount/config.toml")];
        let user = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
        if let Some(dir) = user {
            out.push(dir.join("flmount/config.toml"));
        }
        out
    }

    /// Reads and merges the configuration files that exist.
    pub fn load() -> Result<Config> {
        let explicit = std::env::var_os("FLMOUNT_CONFIG").is_some();
        let mut config = Config::default();
        for path in Config::paths() {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            let layer: Config =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            config.merge(layer);
        }
        Ok(config)
    }

    fn merge(&mut self, other: Config) {
        if other.workdir.is_some() {
            self.workdir = other.workdir;
        }
        if other.cache_size.is_some() {
            self.cache_size = other.cache_size;
        }
        if !other.stores.is_empty() {
            self.stores = other.stores;
        }
        self.insecure_registries.extend(other.insecure_registries);
        self.mirrors.extend(other.mirrors);
    }

    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure_registries.iter().any(|r| r == registry)
    }

    pub fn mirror(&self, registry: &str) -> Option<&str> {
        self.mirrors.get(registry).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_override_earlier_ones() {
        let mut c: Config = toml::from_str(
            r#"
            workdir = "/srv/a"
            stores = ["dir:///a"]
            insecure_registries = ["r1:5000"]
            [mirrors]
            "docker.io" = "m1:5000"
            "#,
        )
        .unwrap();
        c.merge(
            toml::from_str(
                r#"
                cache_size = "1G"
                insecure_registries = ["r2"]
                [mirrors]
                "docker.io" = "m2"
                "#,
            )
            .unwrap(),
        );
        assert_eq!(c.workdir, Some(PathBuf::from("/srv/a")));
        assert_eq!(c.cache_size.as_deref(), Some("1G"));
        assert_eq!(c.stores, ["dir:///a"]);
        assert!(c.is_insecure("r1:5000") && c.is_insecure("r2") && !c.is_insecure("r3"));
        assert_eq!(c.mirror("docker.io"), Some("m2"));
        assert!(
            toml::from_str::<Config>("wrokdir = 1").is_err(),
            "typos are errors"
        );
    }
}
