//! Authentication against real registries: htpasswd basic auth over TLS
//! with a self-signed certificate, and the bearer-token challenge flow with
//! an in-test token issuer. Credentials come from flags, Docker's
//! config.json, REGISTRY_AUTH_FILE and credential helpers; they never appear
//! in flmount's output.

mod common;

use base64::Engine;
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
            tar_of(&[Entry::File("bin/busybox", std::fs::read("/bin/busybox").unwrap())]),
        ),
        (
            Compression::Gzip,
            tar_of(&[Entry::File("etc/motd", b"auth\n".to_vec())]),
        ),
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

    // REGISTRY_AUTH_FILE (podman / skopeo) takes precedence.
    let mut fl4 = Flmount::new();
    let auth_file = fl4.home.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths": {{"https://{}": {{"auth": "{auth}"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    fl4.env("REGISTRY_AUTH_FILE", auth_file.to_str().unwrap());
    let out4 = fl4.ok(&["-image", &image, "-vv"]);

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
    // The workdir holds no credentials either.
    for entry in files_under(&fl.workdir) {
        if entry.is_file() {
            let data = std::fs::read(&entry).unwrap();
            assert!(
                !data.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
                "{} holds the password",
                entry.display()
            );
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
