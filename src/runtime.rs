//! Hand-off to container runtimes: what the image config says to run
//! (entrypoint and cmd, environment, working directory, user), written as
//! an LXC config (`-lxcconfig FILE`, as undocker did) or as an OCI runtime
//! bundle (`-bundle DIR`: `rootfs/` and a `config.json` that runc and crun
//! start).
//!
//! User names are looked up in the image's own `/etc/passwd` and
//! `/etc/group`, read through `openat2(RESOLVE_IN_ROOT)` so an image's
//! symlinks cannot point the lookup at the host's files.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;

use crate::fs::layer::LayerBlob;

/// The part of an image config a runtime needs.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

/// The process an image starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
}

/// The PATH a container gets when its image sets none (as Docker does).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Process {
    /// Reads the process from an image config; `files` (the extracted
    /// image, or its layers) resolves user and group names.
    pub fn from_image_config(config: &[u8], files: ImageFiles) -> Result<Process> {
        let file: ConfigFile = serde_json::from_slice(config).context("parsing the image config")?;
        let c = file.config.unwrap_or_default();
        let mut args: Vec<String> = c.entrypoint.unwrap_or_default();
        args.extend(c.cmd.unwrap_or_default());
        if args.is_empty() {
            args.push("/bin/sh".into());
        }
        let mut env = c.env.unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.into());
        }
        let cwd = Some(c.working_dir.unwrap_or_default())
            .filter(|d| d.starts_with('/'))
            .unwrap_or_else(|| "/".into());
        let (uid, gid) = resolve_user(c.user.as_deref().unwrap_or(""), files)?;
        Ok(Process {
            args,
            env,
            cwd,
            uid,
            gid,
        })
    }

    /// An LXC config fragment starting this process, for `lxc-start`
    /// (`lxc.init.cmd`) and `lxc-execute` (`lxc.execute.cmd`).
    ///
    /// LXC splits both commands on spaces and ignores quotes, so a command
    /// whose arguments hold white space (or are empty) is started through
    /// the image's `/bin/sh`: the command line goes, shell-quoted, into the
    /// environment variable `FLMOUNT_INIT`, which the shell unsets before
    /// it `exec`s the command (which keeps its PID, its environment
    /// otherwise, its user and working directory).
    pub fn lxc_config(&self, image: &str) -> Result<String> {
        let mut out = format!("# Written by flmount for {image}\n");
        let plain = self
            .args
            .iter()
            .all(|a| !a.is_empty() && !a.chars().any(|c| c.is_whitespace() || c.is_control()));
        let cmd = if plain {
            self.args.join(" ")
        } else {
            LXC_SHELL_CMD.to_owned()
        };
        out.push_str(&format!("lxc.init.cmd = {cmd}\n"));
        out.push_str(&format!("lxc.execute.cmd = {cmd}\n"));
        out.push_str(&format!("lxc.init.cwd = {}\n", self.cwd));
        out.push_str(&format!("lxc.init.uid = {}\n", self.uid));
        out.push_str(&format!("lxc.init.gid = {}\n", self.gid));
        for e in &self.env {
            if e.contains(['\n', '\r']) {
                bail!("the image's environment variable {e:?} holds a line break, which an LXC config cannot hold");
            }
            out.push_str(&format!("lxc.environment = {e}\n"));
        }
        if !plain {
            out.push_str(&format!("lxc.environment = {}\n", lxc_shell_init(&self.args)));
        }
        Ok(out)
    }

    /// An OCI runtime spec (`config.json`) running this process in
    /// `rootfs/` with the usual namespaces and mounts (those of `runc spec`).
    pub fn runtime_spec(&self, hostname: &str) -> serde_json::Value {
        let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": { "uid": self.uid, "gid": self.gid },
                "args": self.args,
                "env": self.env,
                "cwd": self.cwd,
                "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
                "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
                "noNewPrivileges": true
            },
            "root": { "path": "rootfs", "readonly": false },
            "hostname": hostname,
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
                { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                  "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
                { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                  "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
                { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                  "options": ["nosuid", "noexec", "nodev"] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs",
                  "options": ["nosuid", "noexec", "nodev", "ro"] },
                { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                  "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
            ],
            "linux": {
                "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
                "namespaces": [
                    { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                    { "type": "uts" }, { "type": "mount" }
                ],
                "maskedPaths": [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                    "/proc/scsi"
                ],
                "readonlyPaths": [
                    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
                ]
            }
        })
    }
}

/// The command LXC runs for a command line it cannot split: the image's
/// shell evaluates `FLMOUNT_INIT` (`${IFS}` keeps LXC from splitting it).
pub const LXC_SHELL_CMD: &str = "/bin/sh -c eval${IFS}\"$FLMOUNT_INIT\"";

/// `FLMOUNT_INIT=...`: the command line, quoted for a POSIX shell, on one
/// line (a line break inside an argument is spelt `$nl`).
fn lxc_shell_init(args: &[String]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    let mut line = String::from("FLMOUNT_INIT=unset FLMOUNT_INIT; ");
    if args.iter().any(|a| a.contains('\n')) {
        line.push_str("nl=$(printf '\\nx'); nl=${nl%x}; ");
    }
    line.push_str("exec ");
    line.push_str(&quoted.join(" "));
    line
}

/// `'arg'` for a POSIX shell; a line break is spelt `'"$nl"'`.
fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''").replace('\n', "'\"$nl\"'"))
}

/// Where the image's own `/etc/passwd` and `/etc/group` are read from.
#[derive(Clone, Copy)]
pub enum ImageFiles<'a> {
    /// Not at hand: only numeric users resolve.
    None,
    /// An extracted or mounted tree (read beneath it, symlinks resolved
    /// inside it).
    Rootfs(&'a Path),
    /// The image's layers, merged by the OCI rules (the regular file the
    /// merged tree holds at that path; a symlink there is not followed).
    Layers(&'a [LayerBlob]),
}

impl ImageFiles<'_> {
    fn read(&self, rel: &str) -> Result<String> {
        match self {
            ImageFiles::None => bail!(
                "names need the image's /{rel}: add -extractto DIR, -mount DIR or -bundle DIR, \
                 or give a numeric user"
            ),
            ImageFiles::Rootfs(root) => read_in_root(root, rel),
            ImageFiles::Layers(layers) => read_in_layers(layers, rel),
        }
    }

    fn has(&self) -> bool {
        !matches!(self, ImageFiles::None)
    }
}

/// `user`, `uid`, `user:group`, `uid:gid` as Docker reads them: a user's
/// group is its primary group from the image's `/etc/passwd`, else 0.
fn resolve_user(spec: &str, files: ImageFiles) -> Result<(u32, u32)> {
    if spec.is_empty() {
        return Ok((0, 0));
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => {
            let primary = files
                .has()
                .then(|| files.read("etc/passwd").ok())
                .flatten()
                .and_then(|p| lookup(&p, |f| f.get(2) == Some(&user)).and_then(|f| f.get(3)?.parse().ok()));
            (uid, primary.unwrap_or(0))
        }
        Err(_) => {
            let passwd = files
                .read("etc/passwd")
                .with_context(|| format!("user {user:?}"))?;
            let fields = lookup(&passwd, |f| f.first() == Some(&user))
                .with_context(|| format!("user {user:?} is not in the image's /etc/passwd"))?;
            let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u32>().ok());
            match (num(2), num(3)) {
                (Some(uid), Some(gid)) => (uid, gid),
                _ => bail!("the image's /etc/passwd entry for {user:?} is malformed"),
            }
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(
                &files.read("etc/group").with_context(|| format!("group {g:?}"))?,
                |f| f.first() == Some(&g),
            )
            .and_then(|f| f.get(2)?.parse().ok())
            .with_context(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// Reads a small regular file of the merged image from its layers.
fn read_in_layers(layers: &[LayerBlob], rel: &str) -> Result<String> {
    use crate::fs::content::ContentSource;
    let changes = crate::fs::layer::read_all(layers)?;
    let mut plan = crate::fs::tree::Tree::from_layers(&changes)?.plan();
    plan.dirs.clear();
    plan.whiteouts.clear();
    plan.inodes
        .retain(|i| i.paths.iter().any(|p| p.as_slice() == rel.as_bytes()));
    match plan.inodes.first().map(|i| &i.kind) {
        Some(crate::fs::tree::InodeKind::File { size, .. }) if *size <= 4 << 20 => {}
        Some(crate::fs::tree::InodeKind::File { .. }) => bail!("the image's /{rel} is larger than 4 MiB"),
        Some(_) => bail!("the image's /{rel} is not a regular file in its layers: extract the image (-extractto DIR) to follow it"),
        None => bail!("the image has no /{rel}"),
    }
    let text = std::sync::Mutex::new(Vec::new());
    crate::fs::content::LayerContent(layers).deliver(&plan, &|_, reader| {
        let mut bytes = Vec::new();
        reader.take(4 << 20).read_to_end(&mut bytes)?;
        *text.lock().unwrap() = bytes;
        Ok(())
    })?;
    String::from_utf8(text.into_inner().unwrap()).with_context(|| format!("the image's /{rel} is not UTF-8"))
}

/// The fields of the first `name:...` line `matches` accepts.
fn lookup(file: &str, matches: impl Fn(&[&str]) -> bool) -> Option<Vec<&str>> {
    file.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| matches(f))
}

/// Reads a small file of the image, resolving symlinks inside `root`.
fn read_in_root(root: &Path, rel: &str) -> Result<String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let dir = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&dir, rel, how).with_context(|| format!("opening the image's /{rel}"))?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the image's /{rel}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &[u8] = br#"{"architecture":"amd64","config":{
        "Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
        "Env":["PATH=/usr/bin:/bin","NGINX_VERSION=1.27"],"WorkingDir":"/srv","User":"www:adm"}}"#;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nadm:x:4:\n").unwrap();
        dir
    }

    #[test]
    fn process_from_an_image_config() {
        let root = rootfs();
        let p = Process::from_image_config(CONFIG, ImageFiles::Rootfs(root.path())).unwrap();
        assert_eq!(p.args, ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]);
        assert_eq!(p.env, ["PATH=/usr/bin:/bin", "NGINX_VERSION=1.27"]);
        assert_eq!((p.cwd.as_str(), p.uid, p.gid), ("/srv", 33, 4));
        let lxc = p.lxc_config("nginx").unwrap();
        assert!(
            lxc.contains(&format!("lxc.init.cmd = {LXC_SHELL_CMD}\n")),
            "{lxc}"
        );
        assert!(
            lxc.contains(&format!("lxc.execute.cmd = {LXC_SHELL_CMD}\n")),
            "{lxc}"
        );
        assert!(
            lxc.contains("lxc.environment = FLMOUNT_INIT=unset FLMOUNT_INIT; exec '/docker-entrypoint.sh' 'nginx' '-g' 'daemon off;'\n"),
            "{lxc}"
        );
        assert!(lxc.contains("lxc.init.uid = 33\nlxc.init.gid = 4\n"), "{lxc}");
        assert!(lxc.contains("lxc.environment = NGINX_VERSION=1.27\n"));
        let spec = p.runtime_spec("web");
        assert_eq!(spec["process"]["args"][3], "daemon off;");
        assert_eq!(spec["process"]["user"]["uid"], 33);
        assert_eq!(spec["root"]["path"], "rootfs");
    }

    #[test]
    fn the_lxc_shell_form_keeps_every_argument() {
        let args = [
            "/usr/bin/printf",
            "[%s]\\n",
            "a b",
            "it's",
            "two\nlines",
            "",
            "$HOME \\ \"q\"",
        ];
        let line = lxc_shell_init(&args.map(String::from));
        let value = line.strip_prefix("FLMOUNT_INIT=").unwrap();
        assert!(!value.contains('\n'));
        // Split as LXC splits lxc.init.cmd: on spaces, quotes ignored.
        let cmd: Vec<&str> = LXC_SHELL_CMD.split(' ').collect();
        let out = std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .env("FLMOUNT_INIT", value)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "[a b]\n[it's]\n[two\nlines]\n[]\n[$HOME \\ \"q\"]\n"
        );
    }

    #[test]
    fn users_resolve_as_docker_resolves_them() {
        let root = rootfs();
        let r = ImageFiles::Rootfs(root.path());
        let none = ImageFiles::None;
        assert_eq!(resolve_user("", none).unwrap(), (0, 0));
        assert_eq!(resolve_user("1000", none).unwrap(), (1000, 0));
        assert_eq!(
            resolve_user("33", r).unwrap(),
            (33, 34),
            "primary group from passwd"
        );
        assert_eq!(resolve_user("1000:50", none).unwrap(), (1000, 50));
        assert_eq!(resolve_user("www", r).unwrap(), (33, 34));
        assert!(resolve_user("nobody", r).is_err());
        assert!(resolve_user("www", none).is_err(), "names need the image");
    }

    #[test]
    fn lookups_stay_inside_the_image() {
        let root = rootfs();
        // An image whose /etc/passwd points at the host's: resolved inside
        // the image, where /etc/shadow does not exist.
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.path().join("etc/passwd")).unwrap();
        assert!(read_in_root(root.path(), "etc/passwd").is_err());
        std::fs::write(root.path().join("etc/shadow"), "inside\n").unwrap();
        assert_eq!(read_in_root(root.path(), "etc/passwd").unwrap(), "inside\n");
    }

    #[test]
    fn defaults_for_a_bare_config() {
        let p = Process::from_image_config(br#"{"config":{}}"#, ImageFiles::None).unwrap();
        assert_eq!(p.args, ["/bin/sh"]);
        assert_eq!(p.env, [DEFAULT_PATH]);
        assert_eq!(p.cwd, "/");
        assert!(Process::from_image_config(b"not json", ImageFiles::None).is_err());
    }
}
