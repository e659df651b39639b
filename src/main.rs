//! The `gpl` command line: a thin layer over the library.

fn main() {
    println!("gpl {}", env!("CARGO_PKG_VERSION"));
}
