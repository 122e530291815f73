//! Generates the contacts.v1 and edge.v1 types, clients and servers with protox, a pure-Rust protobuf
//! compiler, so building needs no system `protoc`. The encoded descriptor set is kept
//! for gRPC server reflection.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "contacts/v1/contact.proto",
    "contacts/v1/event.proto",
    "contacts/v1/contacts_service.proto",
    "edge/v1/replay_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("contacts_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
