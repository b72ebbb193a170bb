//! The command line: tosi-compatible flags, each accepted with one dash or
//! two ([`args`], [`dashes`]), turned once into validated settings with
//! the config file's defaults ([`settings`], [`config`]); errors mapped to
//! documented exit codes ([`exit`]). `main.rs` parses, runs, exits.

pub mod args;
pub mod config;
mod daemon;
mod dashes;
mod exit;
mod settings;

use std::process::ExitCode;

use clap::Parser;

pub use dashes::normalize_args;
pub use exit::exit_code;

use crate::app::settings::Settings;
use args::{Args, Command, Document};
use config::Config;

/// Parses the command line into settings; or an exit code, once what
/// there was to say was said (help, a usage error, completions, the man
/// page).
pub fn parse() -> Result<Settings, ExitCode> {
    let args = match Args::try_parse_from(normalize_args(std::env::args_os())) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return Err(if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    let document = match &args.command {
        Some(Command::Completions { shell }) => Some(Document::Completions(*shell)),
        Some(Command::Man) => Some(Document::Man),
        _ => None,
    };
    if let Some(doc) = document {
        return Err(match doc.write(&mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flmount: error: {e:#}");
                ExitCode::FAILURE
            }
        });
    }
    init_logging(args.verbose, args.quiet);
    let usage = |e: anyhow::Error| {
        eprintln!("flmount: error: {e:#}");
        ExitCode::from(2)
    };
    let config = Config::load().map_err(usage)?;
    let detach = args.daemon;
    let settings = args.settings(&config).map_err(usage)?;
    if detach {
        // Checked above; the child parses the same line without -daemon.
        return Err(daemon::run_detached());
    }
    Ok(settings)
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "flmount=info,warn",
        (false, 1) => "flmount=debug,info",
        (false, _) => "flmount=trace,debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::CommandFactory;

    use super::args::parse_size;
    use super::*;
    use crate::app::settings::{Action, ImageJob, Output};

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(normalize_args(args.iter().map(OsString::from))).unwrap()
    }

    #[test]
    fn single_and_double_dash() {
        let a = parse(&[
            "flmount",
            "-image",
            "alpine",
            "--workdir",
            "/w",
            "-parallel-downloads=8",
            "-v",
            "-validate-cache",
        ]);
        assert_eq!(a.image.as_deref(), Some("alpine"));
        assert_eq!(a.workdir, Some(PathBuf::from("/w")));
        assert_eq!(a.parallel_downloads, 8);
        assert_eq!(a.verbose, 1);
        assert!(a.validate_cache);
    }

    #[test]
    fn passthrough_after_double_dash() {
        let out = normalize_args(["flmount", "-image", "x", "--", "-image"].map(OsString::from));
        assert_eq!(out[1], "--image");
        assert_eq!(out[4], "-image");
    }

    #[test]
    fn settings_validation() {
        let err = |args: &[&str]| parse(args).settings(&Config::default()).unwrap_err().to_string();
        assert!(err(&["flmount"]).contains("nothing to do"));
        assert!(err(&["flmount", "-image", "a", "-username", "u"]).contains("needs -password"));
        // A store is checked before anything is pulled.
        let chain = |args: &[&str]| format!("{:#}", parse(args).settings(&Config::default()).unwrap_err());
        assert!(
            chain(&["flmount", "-image", "a", "-flist", "x.fl", "-store", "foo://bar"])
                .contains("unknown store type")
        );
        assert!(chain(&[
            "flmount",
            "pack",
            "-flist",
            "x.fl",
            "-store",
            "0-ff=dir:///a",
            "d"
        ])
        .contains("store range"));
        assert!(err(&["flmount", "-image", "a", "-platform", "linux"]).contains("os/arch"));
        assert!(err(&["flmount", "-image", "a", "-insecure", "-plain-http"]).contains("exclude"));
        let s = parse(&["flmount", "-image", "a", "-platform", "linux/arm64"])
            .settings(&Config::default())
            .unwrap();
        let Action::Image(ImageJob { pull, .. }) = s.action else {
            panic!()
        };
        assert_eq!(pull.platform.unwrap().to_string(), "linux/arm64");
        assert!(err(&["flmount", "-image", "a", "-extractto", "x", "-mount", "y"]).contains("exclude"));
        assert!(err(&["flmount", "-umount", "x", "-image", "a"]).contains("-umount takes no"));
    }

    #[test]
    fn fuse_settings() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert!(parse_size("5X").is_err() && parse_size("G").is_err());
        let s = parse(&[
            "flmount",
            "-flist",
            "a.fl",
            "-mount",
            "/m",
            "-cache-size",
            "1G",
            "-timeout",
            "5",
        ])
        .settings(&Config::default())
        .unwrap();
        let Action::Serve { mount, .. } = s.action else {
            panic!("{:?}", s.action)
        };
        assert_eq!(mount.mountpoint, PathBuf::from("/m"));
        assert_eq!(mount.cache.size_limit, 1 << 30);
        assert_eq!(mount.cache.timeout, Duration::from_secs(5));
        assert!(mount.cache.dir.is_none() && mount.default_cache_dir.ends_with("cache/chunks"));
        let s = parse(&["flmount", "-image", "a", "-mount", "/m", "-fuse"])
            .settings(&Config::default())
            .unwrap();
        assert!(matches!(
            s.action,
            Action::Image(ImageJob {
                output: Output::Fuse { .. },
                ..
            })
        ));
        let err = |args: &[&str]| parse(args).settings(&Config::default()).unwrap_err().to_string();
        assert!(err(&["flmount", "-image", "a", "-fuse"]).contains("-fuse goes with -mount"));
        assert!(err(&["flmount", "-image", "a", "-mount", "/m", "-prefetch"]).contains("FUSE"));
        assert!(err(&["flmount", "-image", "a", "-cache-store", "dir:///c"]).contains("FUSE"));
        assert!(err(&[
            "flmount",
            "-image",
            "a",
            "-mount",
            "/m",
            "-cache-store",
            "ftp://x"
        ])
        .contains("-cache-store"));
        // The traced mount gets the flags a mount would have.
        let trace = parse(&[
            "flmount",
            "-timeout",
            "7",
            "-cache-store",
            "dir:///c",
            "flist",
            "trace",
            "a.fl",
            "--",
            "true",
        ])
        .settings(&Config::default())
        .unwrap();
        let Action::Flist(crate::app::settings::FlistOp::Trace { forward, command, .. }) = trace.action
        else {
            panic!("not a trace: {:?}", trace.action);
        };
        assert_eq!(forward, ["-timeout", "7", "-cache-store", "dir:///c"]);
        assert_eq!(command, ["true"]);
        // A trace needs a command.
        let no_command = ["flmount", "flist", "trace", "a.fl"].map(OsString::from);
        assert!(Args::try_parse_from(normalize_args(no_command)).is_err());
        assert!(
            err(&["flmount", "-flist", "a.fl", "-mount", "/m", "-extractto", "x"]).contains("no -extractto")
        );
    }

    #[test]
    fn password_is_not_in_debug_settings() {
        let s = parse(&[
            "flmount",
            "-image",
            "a",
            "-username",
            "u",
            "-password",
            "hunter2-secret",
        ])
        .settings(&Config::default())
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn completions_and_man_page_come_from_the_flags() {
        let mut bash = Vec::new();
        Document::Completions(clap_complete::Shell::Bash)
            .write(&mut bash)
            .unwrap();
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("--extractto") && bash.contains("unpack") && bash.contains("--cache-size"));
        assert!(bash.contains("--extractto|-extractto)") && bash.contains(" -image --image "));
        let mut man = Vec::new();
        Document::Man.write(&mut man).unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.contains(".TH flmount") && man.contains("extractto"), "{man}");
        // One page: no references to pages that do not exist; values in the
        // synopsis; the files and environment flmount reads.
        assert!(!man.contains("flmount-pack") && !man.contains("(1)\n"), "{man}");
        assert!(man.contains("\\-image \\fIREF\\fR"), "{man}");
        for needle in [
            ".SH FILES",
            ".SH ENVIRONMENT",
            "FLMOUNT_CONFIG",
            "FLMOUNT_WORKDIR",
            "REGISTRY_AUTH_FILE",
            "config.toml",
            ".nf",
        ] {
            assert!(man.contains(needle), "no {needle} in the man page");
        }
        assert!(matches!(
            parse(&["flmount", "completions", "zsh"]).command,
            Some(Command::Completions {
                shell: clap_complete::Shell::Zsh
            })
        ));
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
