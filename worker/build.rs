//! Compiles the worker's wire formats with `protox` (pure Rust: no `protoc` needed): the
//! shared envelope, the worker-to-worker transport, the control calls and the checkpoint part.

const PROTOS: [&str; 4] = [
    "proto/envelope.proto",
    "proto/peer.proto",
    "proto/control.proto",
    "proto/checkpoint.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    tonic_prost_build::configure().compile_fds_with_config(descriptors, config)?;
    Ok(())
}
