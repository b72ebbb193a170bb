//! Hostile input on stable Rust: the checks of the fuzz targets
//! (`fuzz/checks.rs`, fuzzed coverage-guided by `scripts/fuzz.sh` on a
//! nightly toolchain) run here over thousands of seeded mutations of valid
//! layers, manifests, references and flists, and over every input the
//! fuzzers ever crashed on (`fuzz/regressions/<target>/`). They must give
//! errors, never panics, hangs or writes outside the target.

#[path = "../fuzz/checks.rs"]
mod checks;
#[allow(dead_code)]
#[path = "common/tarball.rs"]
mod tarball;

use std::path::Path;

use tarball::{tar, E};

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
    tar(&[
        E::dir("etc"),
        E::file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        E::symlink("etc/link", "passwd"),
        E::hardlink("etc/hard", "etc/passwd"),
        E::file("etc/.wh.gone", ""),
        E::file("var/.wh..wh..opq", ""),
        E::dir("long/".repeat(40)),
        E::file("bin/su", "x").mode(0o4755),
        E::fifo("dev/fifo"),
        E::file("usr/bin/ping", "p").xattr("security.capability", [1, 0, 0, 2]),
    ])
}

/// Entries that try to leave the target, for the extraction check.
fn hostile_layer() -> Vec<u8> {
    // The check extracts into TMP/rootfs beside TMP/host/secret, TMP being
    // a directory in /tmp: each escape lands where the check looks.
    let escape = checks::ESCAPE_NAME;
    tar(&[
        E::file(format!("../{escape}"), "x"),
        E::file(format!("/{escape}"), "x"),
        E::symlink("up", ".."),
        E::file("up/escaped", "x"),
        E::file("up/host/escaped", "x"),
        E::symlink("two", "../.."),
        E::file(format!("two/{escape}"), "x"),
        E::symlink("deep", "../../.."),
        E::file(format!("deep/{escape}"), "x"),
        E::symlink("abs", "/tmp"),
        E::file(format!("abs/{escape}"), "x"),
        E::hardlink("hl", "../host/secret"),
        E::symlink("swap1", "swap2"),
        E::symlink("swap2", "swap1"),
        E::file("swap1/x", "x"),
        E::symlink(".", "/"),
    ])
}

#[test]
fn mutated_layers_are_errors_or_trees_never_panics() {
    let good = sample_layer();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let parsed = (0..3000)
        .filter(|_| checks::layer(&mutate(&mut rng, &good)))
        .count();
    assert!(
        (100..2900).contains(&parsed),
        "{parsed} of 3000 parsed: mutations too weak or too strong"
    );
}

#[test]
fn mutated_hostile_layers_never_write_outside_the_target() {
    let mut rng = Rng(0x51ed_270b_27a4_6c1f);
    for good in [hostile_layer(), sample_layer()] {
        checks::extract(&good);
        for _ in 0..150 {
            checks::extract(&mutate(&mut rng, &good));
        }
    }
}

/// The fuzz seeds for PAX records (binary values, non-UTF-8 keys) and
/// GNU tar's sparse formats (`scripts/lib/fuzz_seeds.py`): each parses,
/// and mutations of them give errors or trees, never panics; extraction
/// of them writes nothing outside the target.
#[test]
fn mutated_pax_and_sparse_layers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/fuzz_seeds.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rng = Rng(0x0dd_ba11);
    for seed in [
        "pax-binary",
        "sparse-0.0",
        "sparse-0.1",
        "sparse-1.0",
        "sparse-gnu",
    ] {
        let good = std::fs::read(dir.path().join(format!("layer/{seed}.tar"))).unwrap();
        assert!(checks::layer(&good), "the seed {seed} does not parse");
        checks::extract(&good);
        for _ in 0..400 {
            checks::layer(&mutate(&mut rng, &good));
        }
        for _ in 0..20 {
            checks::extract(&mutate(&mut rng, &good));
        }
    }
}

#[test]
fn mutated_manifests_and_references_never_panic() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":10},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":20}]}"#;
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":5,
         "platform":{"os":"linux","architecture":"amd64"}}]}"#;
    let mut rng = Rng(42);
    for base in [
        &manifest[..],
        &index[..],
        b"alpine",
        b"registry.example.com:5000/team/app:1.0",
        b"repo@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        for _ in 0..1500 {
            checks::manifest(&mutate(&mut rng, base));
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
    assert!(checks::flist(&good), "the packed flist was not served");
    let mut rng = Rng(7);
    for _ in 0..300 {
        checks::flist(&mutate(&mut rng, &good));
    }
}

#[test]
fn inputs_the_fuzzers_crashed_on_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    assert!(root.is_dir(), "{} is missing", root.display());
    let mut ran = 0;
    for (target, check) in [
        (
            "layer",
            (|d: &[u8]| {
                checks::layer(d);
            }) as fn(&[u8]),
        ),
        ("extract", checks::extract),
        ("manifest", checks::manifest),
        ("flist", |d: &[u8]| {
            checks::flist(d);
        }),
    ] {
        let Ok(cases) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for case in cases {
            let path = case.unwrap().path();
            eprintln!("{target}: {}", path.display());
            check(&std::fs::read(&path).unwrap());
            ran += 1;
        }
    }
    eprintln!("{ran} saved fuzz inputs checked");
}
