//! Registry credentials: where they come from and in which order.
//!
//! 1. `-username` / `-password` (or `FLMOUNT_PASSWORD`);
//! 2. the file named by `REGISTRY_AUTH_FILE` (podman / skopeo's auth file);
//! 3. `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `auths`,
//!    `credHelpers` and `credsStore` (credential helpers are run as Docker
//!    runs them, through the `docker_credential` crate);
//! 4. anonymous.
//!
//! Credentials are held in [`Credentials`], whose `Debug` never shows the
//! secret, so they cannot leak through a log line.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

/// A user name and password, with the password kept out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: String, password: String) -> Self {
        Credentials { username, password }
    }

    /// The `Authorization` header value for HTTP basic auth.
    pub fn basic_header(&self) -> String {
        use base64::Engine;
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    pub fn to_auth(&self) -> RegistryAuth {
        RegistryAuth::Basic(self.username.clone(), self.password.clone())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

/// Where the credentials for one registry were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flags,
    AuthFile(PathBuf),
    Anonymous,
}

/// Finds the credentials for `registry` (as named in the reference, e.g.
/// `docker.io` or `127.0.0.1:5000`).
pub fn lookup(registry: &str, flags: Option<Credentials>) -> Result<(Option<Credentials>, Source)> {
    if let Some(c) = flags {
        return Ok((Some(c), Source::Flags));
    }
    // Docker reads only the first config file it finds; so do we.
    let Some(file) = auth_files().into_iter().find(|f| f.is_file()) else {
        return Ok((None, Source::Anonymous));
    };
    for key in config_keys(registry) {
        let reader = std::fs::File::open(&file).with_context(|| format!("reading {}", file.display()))?;
        match docker_credential::get_credential_from_reader(reader, &key) {
            Ok(DockerCredential::UsernamePassword(u, p)) => {
                return Ok((Some(Credentials::new(u, p)), Source::AuthFile(file)));
            }
            Ok(DockerCredential::IdentityToken(_)) => {
                tracing::warn!(
                    registry,
                    file = %file.display(),
                    "the auth file holds an identity token for this registry, which flmount cannot use; \
                     pass -username/-password instead"
                );
            }
            Err(CredentialRetrievalError::NoCredentialConfigured) => {}
            Err(CredentialRetrievalError::ConfigReadError) => {
                bail!(
                    "{} is not a valid auth file (expected Docker config.json format)",
                    file.display()
                )
            }
            Err(e) => bail!(
                "getting credentials for {registry} from {}: {}",
                file.display(),
                describe(&e)
            ),
        }
    }
    Ok((None, Source::Anonymous))
}

fn describe(e: &CredentialRetrievalError) -> String {
    match e {
        CredentialRetrievalError::HelperFailure {
            helper,
            stdout,
            stderr,
        } => format!(
            "credential helper docker-credential-{helper} failed: {}",
            if stderr.trim().is_empty() {
                stdout.trim()
            } else {
                stderr.trim()
            }
        ),
        CredentialRetrievalError::HelperCommunicationError => {
            "could not run or talk to the credential helper (is docker-credential-<name> on PATH?)".into()
        }
        other => format!("{other:?}"),
    }
}

/// The auth files to consult, in order; only the first that exists is read.
fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        files.push(PathBuf::from(d).join("config.json"));
    } else if let Some(home) = dirs::home_dir() {
        files.push(home.join(".docker/config.json"));
    }
    files
}

/// The keys under which Docker and podman file a registry's credentials.
fn config_keys(registry: &str) -> Vec<String> {
    if matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        return vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ];
    }
    vec![
        registry.to_owned(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials::new("alice".into(), "s3cret-pw".into());
        let shown = format!("{c:?}");
        assert!(shown.contains("alice") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn docker_hub_keys() {
        assert_eq!(config_keys("docker.io")[0], "https://index.docker.io/v1/");
        assert_eq!(config_keys("127.0.0.1:5000")[0], "127.0.0.1:5000");
    }
}
