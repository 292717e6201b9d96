//! Generates the Rust and TypeScript codecs from `schema/novate.xml` into `OUT_DIR`.
//! The Rust module is included by `src/lib.rs`; the TypeScript text is embedded in the `gen-ts`
//! binary, which writes it to `ts/src/wire/` (and checks it is current with `--check`).

#[path = "codegen/mod.rs"]
mod codegen;

use std::path::PathBuf;

fn main() {
    let schema_path = "schema/novate.xml";
    println!("cargo:rerun-if-changed={schema_path}");
    println!("cargo:rerun-if-changed=codegen");
    let xml = std::fs::read_to_string(schema_path).expect("read schema/novate.xml");
    let schema = match codegen::parse(&xml) {
        Ok(s) => s,
        Err(e) => panic!("schema/novate.xml: {e}"),
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    std::fs::write(out.join("generated.rs"), codegen::rust::generate(&schema))
        .expect("write generated.rs");
    std::fs::write(out.join("generated.ts"), codegen::ts::generate(&schema))
        .expect("write generated.ts");
}
