//! Prints `novate_mem::doctor()` for this host: `cargo run -p novate-mem --example doctor`.

fn main() {
    print!("{}", novate_mem::doctor());
}
