//! The `veto` binary: parses the command line and calls into the library.
fn main() {}
