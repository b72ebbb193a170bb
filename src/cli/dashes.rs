//! tosi's single-dash long flags: `-image x` is read as `--image x`.

use std::ffi::OsString;

use clap::CommandFactory;

use super::args::Args;

/// Accepts tosi's single-dash long flags: `-image x` becomes `--image x`.
/// Only names that are long flags are rewritten, so `-v` and `-h` keep
/// their short meaning; everything after `--` is left alone.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    fn collect(cmd: &clap::Command, out: &mut Vec<String>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned)),
        );
        for sub in cmd.get_subcommands() {
            collect(sub, out);
        }
    }
    let mut longs = vec!["help".to_owned(), "version".to_owned()];
    collect(&Args::command(), &mut longs);
    let mut out = Vec::new();
    let mut passthrough = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || passthrough {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            let body = s.strip_prefix('-').filter(|b| !b.starts_with('-'))?;
            let name = body.split('=').next().unwrap_or(body);
            (name.len() > 1 && longs.iter().any(|l| l == name)).then(|| OsString::from(format!("-{s}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    out
}
