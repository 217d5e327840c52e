//! The `veto` binary: parses the command line and hands it to the library.
use clap::Parser;

fn main() -> std::process::ExitCode {
    veto::cli::main(veto::cli::Cli::parse())
}
