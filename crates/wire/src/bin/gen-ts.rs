//! Writes the TypeScript codecs generated from `schema/novate.xml` to `ts/src/wire/generated.ts`.
//!
//! `gen-ts` writes the file; `gen-ts --check` exits 1 if the committed file differs (CI runs it).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("ts/src/wire/generated.ts");
    let check = std::env::args().any(|a| a == "--check");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if check {
        if current == novate_wire::GENERATED_TS {
            println!("{} is up to date", path.display());
            return ExitCode::SUCCESS;
        }
        eprintln!("{} is stale: run `cargo run -p novate-wire --bin gen-ts`", path.display());
        return ExitCode::FAILURE;
    }
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::write(&path, novate_wire::GENERATED_TS) {
        eprintln!("write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
