//! The `quorum` binary.
fn main() {}
