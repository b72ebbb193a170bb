//! The `flmount` binary: parse the command line, run, exit with the
//! README's code. Everything else lives in the library.

use std::process::ExitCode;

use flmount::flist::fuse::watcher;

fn main() -> ExitCode {
    // flmount re-executed as a FUSE mount's unmount watcher.
    if let Some(mountpoint) = std::env::var_os(watcher::WATCH_ENV) {
        return ExitCode::from(watcher::run(mountpoint.into()));
    }
    let settings = match flmount::cli::parse() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flmount: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Network work runs on the runtime; the rest on this thread.
    let _entered = runtime.enter();
    match flmount::app::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flmount: error: {e:#}");
            ExitCode::from(flmount::cli::exit_code(&e))
        }
    }
}
