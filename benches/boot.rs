//! Boot benchmarks (filled in below).
fn main() {}
