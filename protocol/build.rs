//! Compiles the protocol's `.proto` files with `protox` (a protobuf compiler in pure Rust), so no
//! `protoc` binary is needed on a developer's or CI's machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files = vec![
        "proto/request-reply.proto",
        "proto/types.proto",
        "proto/kafka-egress.proto",
    ];
    // OTLP trace export (vendored from opentelemetry-proto v1.11, unchanged): the worker's own
    // small exporter encodes these, so no OpenTelemetry SDK is built. Only with the `otlp`
    // feature (the worker's): SDK users do not compile them.
    if std::env::var_os("CARGO_FEATURE_OTLP").is_some() {
        files.push("proto/opentelemetry/proto/collector/trace/v1/trace_service.proto");
    }
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(&files, ["proto"])?;
    prost_build::Config::new()
        // Payload bytes are shared between the router, mailboxes and invocations without copying.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
