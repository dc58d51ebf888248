//! Compiles `kagi/v1/*.proto` with protox (pure Rust, no protoc) and writes the encoded
//! descriptor set next to the generated code so the services can serve reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "kagi/v1/keystore.proto",
        "kagi/v1/notifier.proto",
        "kagi/v1/reset.proto",
        "kagi/v1/directory.proto",
        "kagi/v1/errors.proto",
        "kagi/v1/admin.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("kagi_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
