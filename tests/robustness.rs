//! Randomized hostile input on stable Rust (cargo-fuzz needs a nightly
//! toolchain this machine cannot fetch): thousands of mutations of valid
//! layers, manifests, references and flists go through the parsers, which
//! must return errors, never panic or hang.

use std::path::Path;

use flmount::layer::LayerBlob;
use flmount::manifest::{Compression, Manifest};
use flmount::reference::ImageRef;
use flmount::tree::Tree;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flips, overwrites, inserts, deletes or truncates a few bytes.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            out.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(5) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = rng.next() as u8,
            2 => out.insert(at, rng.next() as u8),
            3 => {
                out.remove(at);
            }
            _ => out.truncate(at),
        }
    }
    out
}

fn sample_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    add("etc", tar::EntryType::Directory, b"", None);
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        b"root:x:0:0::/root:/bin/sh\n",
        None,
    );
    add("etc/link", tar::EntryType::Symlink, b"", Some("passwd"));
    add("etc/hard", tar::EntryType::Link, b"", Some("etc/passwd"));
    add("etc/.wh.gone", tar::EntryType::Regular, b"", None);
    add("var/.wh..wh..opq", tar::EntryType::Regular, b"", None);
    add(&"long/".repeat(40), tar::EntryType::Directory, b"", None);
    b.into_inner().unwrap()
}

#[test]
fn mutated_layers_are_errors_or_trees_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_layer();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let path = dir.path().join("layer");
    let (mut parsed, mut refused) = (0, 0);
    for _ in 0..3000 {
        let data = mutate(&mut rng, &good);
        std::fs::write(&path, &data).unwrap();
        let blob = LayerBlob::new(Path::new(&path), Compression::None);
        match blob.changes() {
            Ok(changes) => {
                parsed += 1;
                // Applied over a base layer and on its own.
                let _ = Tree::from_layers(std::slice::from_ref(&changes)).map(|t| t.plan());
                let _ = Tree::from_layers(&[changes.clone(), changes]).map(|t| t.plan());
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        parsed > 100 && refused > 100,
        "parsed {parsed}, refused {refused}: mutations too weak or too strong"
    );
}

#[test]
fn mutated_manifests_and_references_never_panic() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":10},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":20}]}"#;
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":5,
         "platform":{"os":"linux","architecture":"amd64"}}]}"#;
    assert!(Manifest::parse(manifest, None).is_ok() && Manifest::parse(index, None).is_ok());
    let mut rng = Rng(42);
    for _ in 0..5000 {
        let _ = Manifest::parse(&mutate(&mut rng, manifest), None);
        let _ = Manifest::parse(&mutate(&mut rng, index), Some("application/json"));
    }
    for base in [
        "alpine",
        "registry.example.com:5000/team/app:1.0",
        "repo@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        for _ in 0..2000 {
            let bytes = mutate(&mut rng, base.as_bytes());
            let _ = ImageRef::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn mutated_flists_are_refused_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A real flist of a small tree, packed by the binary.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), vec![7u8; 700_000]).unwrap();
    std::os::unix::fs::symlink("d/f", src.join("l")).unwrap();
    let flist = dir.path().join("t.fl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flmount"))
        .args(["-workdir"])
        .arg(dir.path().join("work"))
        .args(["pack", "-flist"])
        .arg(&flist)
        .arg("-store")
        .arg(format!("dir://{}", dir.path().join("chunks").display()))
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good = std::fs::read(&flist).unwrap();
    let mut rng = Rng(7);
    let path = dir.path().join("mutated.fl");
    for _ in 0..300 {
        std::fs::write(&path, mutate(&mut rng, &good)).unwrap();
        if let Ok(fl) = flmount::flist::Flist::open(&path) {
            let _ = fl.plan();
            let _ = fl.routes();
            let _ = fl.tags();
        }
    }
}
