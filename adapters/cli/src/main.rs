//! The `yuyo` command.
fn main() {}
