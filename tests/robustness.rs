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

/// Layers that try to leave the target, for the extraction check: one per
/// escape, with nothing beside it that makes the layer fail before it is
/// written, so the escape itself is written (inside the target) and so are
/// many of its mutations. The last three are refused whole.
fn hostile_layers() -> Vec<(&'static str, Vec<u8>)> {
    // The check extracts into TMP/rootfs beside TMP/host/secret, TMP being
    // a directory in /tmp: each escape lands where the check looks.
    let escape = checks::ESCAPE_NAME;
    vec![
        ("dotdot-name", tar(&[E::file(format!("../{escape}"), "x")])),
        ("absolute-name", tar(&[E::file(format!("/{escape}"), "x")])),
        (
            "symlink-up",
            tar(&[
                E::symlink("up", ".."),
                E::file("up/escaped", "x"),
                E::file("up/host/escaped", "x"),
            ]),
        ),
        (
            "symlink-up-two",
            tar(&[E::symlink("two", "../.."), E::file(format!("two/{escape}"), "x")]),
        ),
        (
            "symlink-up-three",
            tar(&[
                E::symlink("deep", "../../.."),
                E::file(format!("deep/{escape}"), "x"),
            ]),
        ),
        (
            "symlink-absolute",
            tar(&[E::symlink("abs", "/tmp"), E::file(format!("abs/{escape}"), "x")]),
        ),
        ("hardlink-outside", tar(&[E::hardlink("hl", "../host/secret")])),
        (
            "symlink-loop",
            tar(&[
                E::symlink("swap1", "swap2"),
                E::symlink("swap2", "swap1"),
                E::file("swap1/x", "x"),
            ]),
        ),
        ("root-symlink", tar(&[E::symlink(".", "/"), E::file("x", "x")])),
    ]
}

/// Runs `f` on its own thread; a panic there is a failure here, and so is
/// not finishing within `secs` (a hang), rather than a test that never ends.
fn within<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => {
            worker.join().unwrap();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!(),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {secs} s: a hang")
        }
    }
}

#[test]
fn mutated_layers_are_errors_or_trees_never_panics() {
    let parsed = within("3000 mutated layers", 300, || {
        let good = sample_layer();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        (0..3000)
            .filter(|_| checks::layer(&mutate(&mut rng, &good)))
            .count()
    });
    assert!(
        (100..2900).contains(&parsed),
        "{parsed} of 3000 parsed: mutations too weak or too strong"
    );
}

#[test]
fn mutated_hostile_layers_never_write_outside_the_target() {
    let written = within("mutated hostile layers", 300, || {
        let mut rng = Rng(0x51ed_270b_27a4_6c1f);
        let mut written = Vec::new();
        for (name, good) in hostile_layers().into_iter().chain([("sample", sample_layer())]) {
            let refused_whole = ["hardlink-outside", "symlink-loop", "root-symlink"].contains(&name);
            assert_eq!(
                checks::extract(&good),
                !refused_whole,
                "{name}: the seed itself was {}",
                if refused_whole { "written" } else { "refused" }
            );
            let ok = (0..50)
                .filter(|_| checks::extract(&mutate(&mut rng, &good)))
                .count();
            written.push((name, ok));
        }
        written
    });
    // The escape entries themselves reach the writer: some of the
    // mutations of each escape seed extract (and were checked above).
    for (name, ok) in &written {
        if !["hardlink-outside", "symlink-loop", "root-symlink", "sample"].contains(name) {
            assert!(
                *ok >= 3,
                "{name}: only {ok} of 50 mutations were written: {written:?}"
            );
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
    let seeds = dir.path().join("layer");
    let (parsed, written) = within("mutated PAX and sparse layers", 300, move || {
        let mut rng = Rng(0x0dd_ba11);
        let (mut parsed, mut written) = (0, 0);
        for seed in [
            "pax-binary",
            "sparse-0.0",
            "sparse-0.1",
            "sparse-1.0",
            "sparse-gnu",
        ] {
            let good = std::fs::read(seeds.join(format!("{seed}.tar"))).unwrap();
            assert!(checks::layer(&good), "the seed {seed} does not parse");
            assert!(checks::extract(&good), "the seed {seed} is not written");
            parsed += (0..400)
                .filter(|_| checks::layer(&mutate(&mut rng, &good)))
                .count();
            written += (0..20)
                .filter(|_| checks::extract(&mutate(&mut rng, &good)))
                .count();
        }
        (parsed, written)
    });
    assert!(
        (100..1900).contains(&parsed),
        "{parsed} of 2000 mutations parsed: mutations too weak or too strong"
    );
    assert!(written >= 5, "only {written} of 100 mutated layers were written");
}

#[test]
fn mutated_manifests_and_references_never_panic() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":10},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":20}]}"#;
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":5,
         "platform":{"os":"linux","architecture":"amd64"}}]}"#;
    let parsed = within("7500 mutated manifests and references", 300, move || {
        let mut rng = Rng(42);
        let mut parsed = Vec::new();
        for base in [
            &manifest[..],
            &index[..],
            b"alpine",
            b"registry.example.com:5000/team/app:1.0",
            b"repo@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            parsed.push(
                (0..1500)
                    .filter(|_| checks::manifest(&mutate(&mut rng, base)))
                    .count(),
            );
        }
        parsed
    });
    // Mutated documents reach past the JSON parser: some still parse as a
    // manifest or index, most do not.
    for (what, n) in [("manifest", parsed[0]), ("index", parsed[1])] {
        assert!(
            (20..1480).contains(&n),
            "{n} of 1500 mutated {what}s parsed: mutations too weak or too strong"
        );
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
    let served = within("300 mutated flists", 300, move || {
        let mut rng = Rng(7);
        (0..300)
            .filter(|_| checks::flist(&mutate(&mut rng, &good)))
            .count()
    });
    // Some mutations still open and are walked; the rest are refused.
    assert!(
        (5..295).contains(&served),
        "{served} of 300 mutated flists were served: mutations too weak or too strong"
    );
}

/// Every input kept in `fuzz/regressions/<target>/` (inputs a fuzzer
/// crashed on, once fixed, and the known-hostile seeds kept beside them) is
/// replayed through its target's check, within a deadline.
#[test]
fn inputs_the_fuzzers_crashed_on_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    assert!(root.is_dir(), "{} is missing", root.display());
    // How many inputs each target holds at least (what is committed).
    let expected = [("layer", 10), ("extract", 9), ("manifest", 5), ("flist", 1)];
    let ran = within("the saved fuzz inputs", 300, move || {
        let mut ran = Vec::new();
        for (target, _) in expected {
            let check: fn(&[u8]) = match target {
                "layer" => |d| {
                    checks::layer(d);
                },
                "extract" => |d| {
                    checks::extract(d);
                },
                "manifest" => |d| {
                    checks::manifest(d);
                },
                _ => |d| {
                    checks::flist(d);
                },
            };
            let dir = root.join(target);
            let cases = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut n = 0;
            for case in cases {
                let path = case.unwrap().path();
                eprintln!("{target}: {}", path.display());
                check(&std::fs::read(&path).unwrap());
                n += 1;
            }
            ran.push((target, n));
        }
        ran
    });
    for ((target, n), (_, least)) in ran.iter().zip(expected) {
        assert!(
            *n >= least,
            "fuzz/regressions/{target} holds {n} inputs, fewer than the {least} committed"
        );
    }
}

/// Writes the hostile seeds into `fuzz/regressions/` (run by hand with
/// `--ignored` after changing them; the files are committed).
#[test]
#[ignore = "writes fuzz/regressions/; run by hand when the hostile seeds change"]
fn write_the_hostile_seeds_into_the_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for (name, data) in hostile_layers() {
        for target in ["layer", "extract"] {
            std::fs::create_dir_all(root.join(target)).unwrap();
            std::fs::write(root.join(target).join(format!("hostile-{name}.tar")), &data).unwrap();
        }
    }
}
