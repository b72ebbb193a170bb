//! A real registry for tests: the CNCF distribution `docker-registry` on a
//! free loopback port, optionally over TLS (a self-signed certificate) with
//! htpasswd basic auth or bearer tokens from the in-test issuer
//! ([`super::token`]). Images are pushed with skopeo, or through the
//! registry API exactly as [`super::oci`] wrote them. The server is killed
//! and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::host::{free_port, need, wait_for_port};
use super::oci::{sha256_hex, Compression, ImageSpec, Layout, Written};
use super::run::run_ok;
use super::tls::self_signed_cert;
use super::token::TokenServer;

/// Authentication a test registry demands.
pub enum RegistryAuth {
    None,
    /// htpasswd basic auth (over TLS).
    Basic {
        user: String,
        password: String,
    },
    /// Bearer tokens issued by an in-test token server.
    Token {
        user: String,
        password: String,
    },
}

/// A running `docker-registry`.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    pub tls_cert: Option<PathBuf>,
    token_server: Option<TokenServer>,
}

impl Registry {
    /// A plain-HTTP registry with no auth.
    pub fn start() -> Registry {
        Registry::start_with(false, RegistryAuth::None)
    }

    pub fn start_with(tls: bool, auth: RegistryAuth) -> Registry {
        need("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             compatibility:\n  schema1:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        let mut tls_cert = None;
        if tls {
            let (cert, key) = self_signed_cert(dir.path(), "registry");
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
            tls_cert = Some(cert);
        }
        let mut token_server = None;
        match auth {
            RegistryAuth::None => {}
            RegistryAuth::Basic { user, password } => {
                let hash = bcrypt::hash(&password, 4).unwrap();
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).unwrap();
                cfg += &format!(
                    "auth:\n  htpasswd:\n    realm: flmount-test\n    path: {}\n",
                    path.display()
                );
            }
            RegistryAuth::Token { user, password } => {
                let (cert, key) = self_signed_cert(dir.path(), "token");
                let server = TokenServer::start(user, password, key, cert.clone());
                cfg += &format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: flmount-test\n    \
                     issuer: flmount-test-issuer\n    rootcertbundle: {}\n",
                    server.port,
                    cert.display()
                );
                token_server = Some(server);
            }
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, cfg).unwrap();
        let mut reg = Registry {
            child: None,
            port,
            dir,
            config,
            tls_cert,
            token_server,
        };
        reg.resume();
        reg
    }

    /// Tokens the bearer-token issuer has handed out (and refused).
    pub fn tokens(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        let t = self.token_server.as_ref().expect("not a token-auth registry");
        (t.issued.load(SeqCst), t.refused.load(SeqCst))
    }

    /// Every bearer token the issuer has handed out.
    pub fn issued_tokens(&self) -> Vec<String> {
        let t = self.token_server.as_ref().expect("not a token-auth registry");
        t.tokens.lock().unwrap().clone()
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server (to test "registry down"); `resume` starts it again.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn resume(&mut self) {
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        wait_for_port(self.port, &mut child, "docker-registry");
        self.child = Some(child);
    }

    /// Where the registry keeps the blob `hex` (sha256), for corrupting it.
    pub fn blob_data_path(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes an OCI layout's tag with skopeo; `extra` e.g. `["--format", "v2s2"]`.
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str, extra: &[&str]) {
        self.push_with_creds(layout, tag, repo_tag, extra, None)
    }

    pub fn push_with_creds(
        &self,
        layout: &Path,
        tag: &str,
        repo_tag: &str,
        extra: &[&str],
        creds: Option<&str>,
    ) {
        need("skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.arg(format!("--dest-creds={c}"));
        }
        cmd.args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr()));
        run_ok(&mut cmd);
    }

    /// Pushes blobs and a manifest through the registry API directly, with
    /// no conversion (skopeo would compress plain tar layers).
    pub fn push_raw(&self, repo: &str, tag: &str, blobs: &[Vec<u8>], manifest: &[u8], media_type: &str) {
        let base = format!("http://{}/v2/{repo}", self.addr());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = reqwest::Client::new();
            for blob in blobs {
                let digest = format!("sha256:{}", sha256_hex(blob));
                let start = client
                    .post(format!("{base}/blobs/uploads/"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(start.status().as_u16(), 202, "starting an upload");
                let location = start.headers()["location"].to_str().unwrap().to_owned();
                let url = if location.starts_with("http") {
                    location
                } else {
                    format!("http://{}{location}", self.addr())
                };
                let sep = if url.contains('?') { '&' } else { '?' };
                let put = client
                    .put(format!("{url}{sep}digest={digest}"))
                    .body(blob.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(put.status().as_u16(), 201, "uploading {digest}");
            }
            let put = client
                .put(format!("{base}/manifests/{tag}"))
                .header("content-type", media_type)
                .body(manifest.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                put.status().as_u16(),
                201,
                "pushing the manifest: {}",
                put.text().await.unwrap()
            );
        });
    }

    /// Pushes an image made of `layers` (each a tar with its compression)
    /// as `repo:t`, without conversion; returns its reference and layout.
    pub fn push_layers(&self, repo: &str, layers: Vec<(Compression, Vec<u8>)>, layout_dir: &Path) -> String {
        self.push_spec(repo, &ImageSpec::new(repo, layers), layout_dir)
    }

    /// Pushes one image described by `spec` as `repo:t`; returns its reference.
    pub fn push_spec(&self, repo: &str, spec: &ImageSpec, layout_dir: &Path) -> String {
        self.push_spec_written(repo, spec, layout_dir).0
    }

    /// As [`Registry::push_layers`], also returning the digests pushed.
    pub fn push_layers_written(
        &self,
        repo: &str,
        layers: Vec<(Compression, Vec<u8>)>,
        layout_dir: &Path,
    ) -> (String, Written) {
        self.push_spec_written(repo, &ImageSpec::new(repo, layers), layout_dir)
    }

    /// As [`Registry::push_spec`], also returning the digests pushed.
    pub fn push_spec_written(&self, repo: &str, spec: &ImageSpec, layout_dir: &Path) -> (String, Written) {
        let mut l = Layout::new(layout_dir);
        let w = l.image(spec);
        l.tag_image("t", &w);
        let blobs: Vec<Vec<u8>> = w.layers.iter().chain([&w.config]).map(|d| l.blob(d)).collect();
        self.push_raw(
            repo,
            "t",
            &blobs,
            &l.blob(&w.manifest),
            "application/vnd.oci.image.manifest.v1+json",
        );
        (format!("{}/{repo}:t", self.addr()), w)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
