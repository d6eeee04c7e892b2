//! Compiles the worker-to-worker protocol and the checkpoint format with `protox` (pure Rust:
//! no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/peer.proto");
    println!("cargo:rerun-if-changed=proto/checkpoint.proto");
    let descriptors = protox::compile(["proto/peer.proto", "proto/checkpoint.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    tonic_prost_build::configure().compile_fds_with_config(descriptors, config)?;
    Ok(())
}
