//! The `veto` binary: parses the command line and hands it to the library.
use clap::Parser;

/// jemalloc serves every allocation of the process, RocksDB's and librdkafka's included (its
/// `malloc` replaces libc's), and hands freed pages back to the OS at once
/// (`.cargo/config.toml`), so RSS follows the store's memory budget: docs/store.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    veto::cli::main(veto::cli::Cli::parse())
}
