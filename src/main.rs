//! The `flmount` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    flmount::cli::main()
}
