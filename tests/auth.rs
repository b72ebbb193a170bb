//! Authentication against real registries: htpasswd basic auth over TLS
//! with a self-signed certificate, and the bearer-token challenge flow with
//! an in-test token issuer. Credentials come from flags, Docker's
//! config.json, REGISTRY_AUTH_FILE and credential helpers; they never appear
//! in flmount's output.

mod common;

use base64::Engine;
use common::tarball::{tar, E};
use common::*;

const USER: &str = "alice";
const PASSWORD: &str = "pw-Xy7-never-logged";

fn push_busybox(reg: &Registry, repo_tag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("l");
    let mut layout = Layout::new(&dir);
    let layers = vec![
        (
            Compression::Gzip,
            tar(&[E::file("bin/busybox", std::fs::read("/bin/busybox").unwrap()).mode(0o755)]),
        ),
        (Compression::Gzip, tar(&[E::file("etc/motd", b"auth\n")])),
    ];
    let w = layout.image(&ImageSpec::new("auth", layers));
    layout.tag_image("t", &w);
    reg.push_with_creds(&dir, "t", repo_tag, &[], Some(&format!("{USER}:{PASSWORD}")));
}

/// Writes an executable script from a child process: a file this process
/// opened for writing could be inherited, still open, by a child that
/// another test thread forks at that moment, and running the script would
/// then fail with ETXTBSY.
fn write_script(path: &std::path::Path, content: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .args(["-c", "cat > \"$0\" && chmod 755 \"$0\""])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(content.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Asserts no run output contains the password.
fn assert_no_secret(outputs: &[&str]) {
    for o in outputs {
        assert!(!o.contains(PASSWORD), "the password leaked into output:\n{o}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        assert!(
            !o.contains(&b64),
            "the encoded credentials leaked into output:\n{o}"
        );
    }
}

#[test]
fn basic_auth_over_tls_with_flags_and_auth_files() {
    let reg = Registry::start_with(
        true,
        RegistryAuth::Basic {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    );
    push_busybox(&reg, "secure/app:1");
    let image = format!("{}/secure/app:1", reg.addr());

    // No credentials: refused, exit code 4.
    let fl = Flmount::new();
    let err = fl.fails(&["-image", &image], 4);
    assert!(err.contains("authentication"), "{err}");

    // Wrong password: refused; the wrong password is not echoed either.
    let out = fl.fails(
        &[
            "-image",
            &image,
            "-username",
            USER,
            "-password",
            "wrong-pw-3141",
            "-vv",
        ],
        4,
    );
    assert!(!out.contains("wrong-pw-3141"), "{out}");

    // Flags, at every verbosity, without leaking.
    let out1 = fl.ok(&["-image", &image, "-username", USER, "-password", PASSWORD, "-vv"]);
    assert_no_secret(&[&out1]);

    // FLMOUNT_PASSWORD instead of the flag.
    let mut fl2 = Flmount::new();
    fl2.env("FLMOUNT_PASSWORD", PASSWORD);
    let out2 = fl2.ok(&["-image", &image, "-username", USER, "-v"]);

    // Docker's config.json `auths`.
    let fl3 = Flmount::new();
    let docker_dir = fl3.home.path().join(".docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr()),
    )
    .unwrap();
    let out3 = fl3.ok(&["-image", &image, "-vv"]);

    // REGISTRY_AUTH_FILE (podman / skopeo) takes precedence over a
    // config.json naming other credentials for the same registry: with the
    // right ones in the file and wrong ones in config.json the pull works,
    // and the other way round it is refused.
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:wrong-pw-2718"));
    let entry = |creds: &str| {
        format!(
            r#"{{"auths": {{"https://{}": {{"auth": "{creds}"}}}}}}"#,
            reg.addr()
        )
    };
    let mut fl4 = Flmount::new();
    let auth_file = fl4.home.path().join("auth.json");
    std::fs::write(&auth_file, entry(&auth)).unwrap();
    std::fs::create_dir_all(fl4.home.path().join(".docker")).unwrap();
    std::fs::write(fl4.home.path().join(".docker/config.json"), entry(&wrong)).unwrap();
    fl4.env("REGISTRY_AUTH_FILE", auth_file.to_str().unwrap());
    let out4 = fl4.ok(&["-image", &image, "-vv"]);
    let mut fl4b = Flmount::new();
    let auth_file = fl4b.home.path().join("auth.json");
    std::fs::write(&auth_file, entry(&wrong)).unwrap();
    std::fs::create_dir_all(fl4b.home.path().join(".docker")).unwrap();
    std::fs::write(fl4b.home.path().join(".docker/config.json"), entry(&auth)).unwrap();
    fl4b.env("REGISTRY_AUTH_FILE", auth_file.to_str().unwrap());
    let err = fl4b.fails(&["-image", &image], 4);
    assert!(
        err.contains("authentication"),
        "config.json was used over REGISTRY_AUTH_FILE: {err}"
    );

    // A credential helper named in credHelpers, run as Docker runs it.
    let mut fl5 = Flmount::new();
    let bin = fl5.home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_script(
        &bin.join("docker-credential-flmtest"),
        &format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n"
        ),
    );
    let docker_dir = fl5.home.path().join(".docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "flmtest"}}}}"#, reg.addr()),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    fl5.env("PATH", &path);
    let out5 = fl5.ok(&["-image", &image, "-vv"]);

    // credsStore, with a helper that fails: its message is shown.
    let mut fl6 = Flmount::new();
    write_script(
        &bin.join("docker-credential-broken"),
        "#!/bin/sh\nread server\necho 'keyring locked' >&2\nexit 1\n",
    );
    let docker_dir = fl6.home.path().join(".docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(docker_dir.join("config.json"), r#"{"credsStore": "broken"}"#).unwrap();
    fl6.env("PATH", &path);
    let err6 = fl6.fails(&["-image", &image], 1);
    assert!(
        err6.contains("docker-credential-broken") && err6.contains("keyring locked"),
        "{err6}"
    );

    assert_no_secret(&[&out2, &out3, &out4, &out5]);
    // The workdirs of the runs that pulled hold no credentials either.
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let workdirs = [&fl, &fl2, &fl3, &fl4, &fl5].map(|f| files_under(&f.workdir));
    assert!(workdirs.iter().all(|w| w.len() >= 4), "a workdir holds no blobs");
    for entry in workdirs.into_iter().flatten() {
        if entry.is_file() {
            let data = std::fs::read(&entry).unwrap();
            for secret in [PASSWORD, b64.as_str()] {
                assert!(
                    !data.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the credentials",
                    entry.display()
                );
            }
        }
    }
}

#[test]
fn bearer_token_challenge_flow() {
    let reg = Registry::start_with(
        false,
        RegistryAuth::Token {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    );
    push_busybox(&reg, "tok/app:1");
    let image = format!("{}/tok/app:1", reg.addr());
    let fl = Flmount::new();
    let (issued_before, _) = reg.tokens();
    let out = fl.ok(&["-image", &image, "-username", USER, "-password", PASSWORD, "-vv"]);
    assert_no_secret(&[&out]);
    assert!(
        reg.tokens().0 > issued_before,
        "the pull did not go through the token issuer"
    );
    // The bearer tokens issued are in neither the log nor the workdir (a
    // token's signature is what makes it usable: looked for on its own).
    let tokens = reg.issued_tokens();
    assert!(!tokens.is_empty());
    let files: Vec<(String, Vec<u8>)> = files_under(&fl.workdir)
        .into_iter()
        .chain(files_under(fl.home.path()))
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    assert!(files.len() > 3, "{} files", files.len());
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(signature.len() > 100);
        for needle in [token.as_str(), signature] {
            assert!(!out.contains(needle), "a bearer token is in the log:\n{out}");
            for (path, data) in &files {
                assert!(
                    !data.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{path} holds a bearer token"
                );
            }
        }
    }
    let (_, refused_before) = reg.tokens();
    let err = fl.fails(
        &[
            "-image",
            &image,
            "-username",
            USER,
            "-password",
            "nope-nope",
            "-validate-cache",
        ],
        4,
    );
    assert!(
        reg.tokens().1 > refused_before,
        "the wrong password never reached the token issuer"
    );
    assert!(err.contains("authentication") || err.contains("denied"), "{err}");
    let fresh = Flmount::new();
    let err = fresh.fails(&["-image", &image], 4);
    assert!(err.contains("authentication") || err.contains("denied"), "{err}");
}
