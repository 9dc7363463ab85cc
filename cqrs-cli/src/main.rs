//! `cqrs`: see the crate's documentation, or `cqrs --help`.

fn main() -> std::process::ExitCode {
    cqrs_cli::main()
}
