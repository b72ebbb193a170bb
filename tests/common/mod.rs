//! The test bed for integration tests: real servers on free loopback ports
//! (the CNCF distribution registry, optionally with TLS and htpasswd or
//! bearer-token auth), fixture images written as OCI layouts and pushed
//! with skopeo, and a runner for the flmount binary.
//!
//! Every server is a child process killed and reaped on drop.

#![allow(dead_code)]

pub mod fixtures;
pub mod fstree;
pub mod mounts;
pub mod servers;
pub mod tarball;
pub mod token;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::Digest as _;

/// Panics with a clear message when a test-bed tool is missing.
pub fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "the test bed needs `{tool}`, which is not installed: run `scripts/install-testbed.sh` (as root)"
    );
}

/// True when running as root; otherwise says loudly why the test skips.
pub fn root_or_skip(test: &str, why: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(test, &format!("needs root ({why})"));
    false
}

/// Whether a skipped test must fail instead: in CI (`CI=true`, as CI
/// runs `.ci/run`) or with `FLMOUNT_STRICT=1`, every test runs for real.
pub fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("FLMOUNT_STRICT").is_ok_and(|v| v == "1")
}

/// Reports a test that cannot run here: a failure when [`strict`],
/// otherwise a SKIPPED line on stdout and stderr. Root-only tests are
/// normally compiled as ignored where they cannot run (`build.rs`:
/// `cfg(flmount_no_root)`, `cfg(flmount_no_fuse)`), so `cargo test`
/// counts them as ignored; this is the fallback for a test binary built
/// as root and run by another user.
pub fn skip(test: &str, why: &str) {
    assert!(
        !strict(),
        "{test} cannot run here ({why}), and skips are failures in CI (CI=true / FLMOUNT_STRICT=1)"
    );
    println!("SKIPPED {test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on port {port}");
}

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
    token_server: Option<token::TokenServer>,
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
                let server = token::TokenServer::start(user, password, key, cert.clone());
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
}

impl Registry {
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
}

impl Registry {
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

/// A self-signed certificate for 127.0.0.1, made with openssl.
pub fn self_signed_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    need("openssl");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    run_ok(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]));
    (cert, key)
}

/// Whether something of type `fstype` (any type for `None`) is mounted at
/// `dir`, from /proc/self/mounts (no stat of `dir`, which could hang).
pub fn mounted_at(dir: &Path, fstype: Option<&str>) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts.lines().any(|l| {
        let mut f = l.split(' ').skip(1);
        f.next() == dir.to_str() && fstype.is_none_or(|t| f.next() == Some(t))
    })
}

/// Unpacks a tar file with GNU tar, keeping owners, modes and xattrs.
pub fn untar(tarball: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    run_ok(
        Command::new("tar")
            .args(["-xpf"])
            .arg(tarball)
            .arg("-C")
            .arg(dest)
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"]),
    );
}

/// Every non-directory entry below `dir` (symlinks not followed); none
/// when `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// The bytes of the regular files below `dir`.
pub fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Runs `cmd` to its end; returns its output and its peak resident memory
/// in KiB. GNU time runs it and reports: the kernel counts in a child's
/// peak the memory of the process it was forked from, so the peak must be
/// taken from a small parent, not from this (large) test process. `cmd`
/// runs with only the environment it sets (as [`Flmount::command`] does).
pub fn run_measuring_memory(cmd: &Command) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .env_clear()
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => timed.env(key, v),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let output = timed
        .output()
        .expect("running /usr/bin/time (Debian package time)");
    let text = std::fs::read_to_string(report.path()).unwrap();
    // On failure GNU time writes "Command exited with non-zero status N" first.
    let kib = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak memory in GNU time's report: {text:?}"));
    (output, kib)
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------- fixtures

#[derive(Clone, Copy, Debug)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// An OCI image layout on disk, built by hand for full control.
pub struct Layout {
    pub dir: PathBuf,
    /// (tag, descriptor json) entries of index.json
    tags: Vec<serde_json::Value>,
}

/// What one image of a layout is made of.
pub struct ImageSpec<'a> {
    pub layers: Vec<(Compression, Vec<u8>)>,
    pub os: &'a str,
    pub arch: &'a str,
    pub variant: Option<&'a str>,
    /// Distinguishes otherwise identical configs.
    pub label: &'a str,
    /// The config's `config` object (entrypoint, cmd, env, ...), if not
    /// the default `/bin/sh` entrypoint.
    pub process: Option<serde_json::Value>,
    /// Layers built elsewhere (e.g. streamed, too big to hold as a tar),
    /// stacked above `layers`.
    pub prebuilt: Vec<PrebuiltLayer>,
}

/// A compressed layer blob with the digest of its uncompressed tar.
pub struct PrebuiltLayer {
    pub media_type: &'static str,
    pub blob: Vec<u8>,
    pub diff_id: String,
}

impl<'a> ImageSpec<'a> {
    pub fn new(label: &'a str, layers: Vec<(Compression, Vec<u8>)>) -> Self {
        ImageSpec {
            layers,
            os: "linux",
            arch: "amd64",
            variant: None,
            label,
            process: None,
            prebuilt: Vec::new(),
        }
    }
}

/// A written image: digests for assertions.
pub struct Written {
    pub manifest: String,
    pub manifest_size: usize,
    pub config: String,
    pub layers: Vec<String>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let l = Layout {
            dir: dir.to_owned(),
            tags: Vec::new(),
        };
        l.write_index();
        l
    }

    /// The bytes of a blob of this layout.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(
            self.dir
                .join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap()
    }

    fn put(&self, data: &[u8]) -> String {
        let hex = sha256_hex(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), data).unwrap();
        format!("sha256:{hex}")
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.tags});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Writes the blobs and manifest of one image; returns its digests.
    pub fn image(&mut self, spec: &ImageSpec) -> Written {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layers = Vec::new();
        let built: Vec<PrebuiltLayer> = spec
            .layers
            .iter()
            .map(|(c, tar)| PrebuiltLayer {
                media_type: c.media_type(),
                blob: c.compress(tar),
                diff_id: format!("sha256:{}", sha256_hex(tar)),
            })
            .collect();
        for layer in built.iter().chain(&spec.prebuilt) {
            let digest = self.put(&layer.blob);
            diff_ids.push(layer.diff_id.clone());
            layer_descs
                .push(json!({"mediaType": layer.media_type, "digest": digest, "size": layer.blob.len()}));
            layers.push(digest);
        }
        let mut platform = json!({"os": spec.os, "architecture": spec.arch});
        if let Some(v) = spec.variant {
            platform["variant"] = json!(v);
        }
        let mut config = platform.clone();
        config["config"] = spec.process.clone().unwrap_or_else(
            || json!({"Entrypoint": ["/bin/sh"], "Env": ["PATH=/bin"], "Labels": {"test": spec.label}}),
        );
        let history: Vec<_> = diff_ids
            .iter()
            .map(|d| json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("layer {d}")}))
            .collect();
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        config["history"] = json!(history);
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = self.put(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = self.put(&manifest);
        Written {
            manifest: manifest_digest,
            manifest_size: manifest.len(),
            config: config_digest,
            layers,
        }
    }

    /// Tags a single-platform image.
    pub fn tag_image(&mut self, tag: &str, w: &Written) {
        self.tags.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": w.manifest, "size": w.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
    }

    /// Tags an index over several platform images; returns the index digest.
    pub fn tag_index(&mut self, tag: &str, images: &[(&ImageSpec, &Written)]) -> String {
        let manifests: Vec<_> = images
            .iter()
            .map(|(spec, w)| {
                let mut platform = json!({"os": spec.os, "architecture": spec.arch});
                if let Some(v) = spec.variant {
                    platform["variant"] = json!(v);
                }
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": w.manifest, "size": w.manifest_size, "platform": platform})
            })
            .collect();
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})).unwrap();
        let digest = self.put(&index);
        self.tags.push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
        digest
    }
}

/// Deterministic incompressible-ish bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------- flmount

/// Runs the flmount binary with a private HOME and DOCKER_CONFIG, so the
/// host's credentials never leak into a test.
pub struct Flmount {
    pub home: tempfile::TempDir,
    pub workdir: PathBuf,
    envs: Vec<(String, String)>,
}

impl Flmount {
    pub fn new() -> Flmount {
        let home = tempfile::tempdir().unwrap();
        let workdir = home.path().join("work");
        Flmount {
            home,
            workdir,
            envs: Vec::new(),
        }
    }

    pub fn env(&mut self, k: &str, v: &str) -> &mut Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flmount"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("DOCKER_CONFIG", self.home.path().join(".docker"))
            .env("RUST_BACKTRACE", "1")
            .arg("-workdir")
            .arg(&self.workdir);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs and asserts success; returns stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "flmount {args:?} failed ({}):\n{stderr}",
            out.status
        );
        stderr
    }

    /// Runs and asserts failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "flmount {args:?}: expected exit {code}:\n{stderr}"
        );
        stderr
    }

    pub fn blob(&self, digest: &str) -> PathBuf {
        let (algo, hex) = digest.split_once(':').unwrap();
        self.workdir.join("blobs").join(algo).join(hex)
    }
}

// ---------------------------------------------------------------- faults

/// What a [`FaultProxy`] does to a connection it faults.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Answer the request with this status line (e.g. `503 Service
    /// Unavailable`), these extra header lines (each ending in `\r\n`) and
    /// `Connection: close`.
    Status(&'static str, &'static str),
    /// Forward the connection, but stop sending the server's answer after
    /// this many bytes, keeping the connection open: a stalled transfer.
    StallAfter(usize),
}

/// A TCP proxy in front of a server that faults the first `failures` HTTP
/// connections, then forwards every later connection untouched. TLS
/// handshakes are refused without counting. It records when each
/// connection was faulted or forwarded, and how many requests asked for a
/// byte range.
pub struct FaultProxy {
    pub port: u16,
    /// Connections faulted so far.
    pub failed: Arc<AtomicUsize>,
    /// Requests with a `Range` header so far.
    pub ranged: Arc<AtomicUsize>,
    /// (when, faulted) for each HTTP connection, in order.
    pub connections: Arc<Mutex<Vec<(Instant, bool)>>>,
    /// Every request forwarded to the server, in order.
    pub requests: Arc<Mutex<Vec<Request>>>,
}

/// A request a [`FaultProxy`] forwarded: what the server was asked.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The `Range` header's value, if any (`bytes=N-`).
    pub range: Option<String>,
}

impl FaultProxy {
    /// The requests forwarded so far with this method and a path ending in `suffix`.
    pub fn requests_for(&self, method: &str, suffix: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .cloned()
            .collect()
    }
}

/// Takes each complete request head (up to its blank line) out of `pending`:
/// the requests flmount sends a registry have no body.
fn parse_requests(pending: &mut Vec<u8>, out: &Mutex<Vec<Request>>) {
    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let (Some(method), Some(path)) = (first.next(), first.next()) else {
            continue;
        };
        let range = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("range"))
            .map(|(_, v)| v.trim().to_owned());
        out.lock().unwrap().push(Request {
            method: method.to_owned(),
            path: path.to_owned(),
            range,
        });
    }
}

impl FaultProxy {
    /// Answers the first `failures` connections with `status`.
    pub fn start(target_port: u16, failures: usize, status: &'static str) -> FaultProxy {
        FaultProxy::with(target_port, failures, Fault::Status(status, ""))
    }

    pub fn with(target_port: u16, failures: usize, fault: Fault) -> FaultProxy {
        use std::io::Read;
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = FaultProxy {
            port,
            failed: Arc::default(),
            ranged: Arc::default(),
            connections: Arc::default(),
            requests: Arc::default(),
        };
        let (failed, ranged, connections, requests) = (
            proxy.failed.clone(),
            proxy.ranged.clone(),
            proxy.connections.clone(),
            proxy.requests.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let mut first = [0u8; 1];
                let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
                // A TLS handshake (a client probing for HTTPS) is refused
                // without counting: only HTTP requests get the fault.
                if client.peek(&mut first).unwrap_or(0) == 0 || first[0] == 0x16 {
                    continue;
                }
                let _ = client.set_read_timeout(None);
                // A status fault is claimed by the connection; a stall, by
                // the first connections whose answers grow long enough.
                let claim = {
                    let failed = failed.clone();
                    move || {
                        failed
                            .fetch_update(SeqCst, SeqCst, |n| (n < failures).then_some(n + 1))
                            .is_ok()
                    }
                };
                let stall_after = match fault {
                    Fault::StallAfter(n) => n,
                    Fault::Status(..) => usize::MAX,
                };
                let faulted = matches!(fault, Fault::Status(..)) && claim();
                connections.lock().unwrap().push((Instant::now(), faulted));
                if let (true, Fault::Status(status, headers)) = (faulted, fault) {
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    let body = "injected fault";
                    let _ = write!(
                        client,
                        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c1, mut s1) = (client, server);
                let (ranged, requests) = (ranged.clone(), requests.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut pending = Vec::new();
                    while let Ok(n @ 1..) = c1.read(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                        ranged.fetch_add(text.matches("\r\nrange: bytes=").count(), SeqCst);
                        pending.extend_from_slice(&buf[..n]);
                        parse_requests(&mut pending, &requests);
                        if s1.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut sent = 0usize;
                    let mut limit = stall_after;
                    while let Ok(n @ 1..) = s2.read(&mut buf) {
                        if sent + n >= limit {
                            if claim() {
                                // Stalled: nothing more is sent; the connection
                                // stays open until the client gives up on it.
                                let _ = c2.write_all(&buf[..limit - sent]);
                                return;
                            }
                            limit = usize::MAX;
                        }
                        if c2.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        sent += n;
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        proxy
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
