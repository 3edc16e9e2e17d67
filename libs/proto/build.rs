//! Compiles every `.proto` under `proto/` with protox, so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "ballast/common/v1/common.proto",
        "ballast/ingest/v1/ingest.proto",
        "ballast/dev/v1/dev.proto",
        "ballast/dedup/v1/dedup.proto",
        "ballast/failover/v1/envelope.proto",
        "ballast/retry/v1/retry.proto",
        "ballast/topology/v1/topology.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("ballast_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // A record's bytes stay slices of the request buffer when decoded: no copy per
        // record between the HTTP/2 frame and the producer.
        .bytes(".ballast.ingest.v1.Record.key")
        .bytes(".ballast.ingest.v1.Record.value")
        .bytes(".ballast.ingest.v1.Header.value")
        // The failover envelope takes those slices as they are.
        .bytes(".ballast.failover.v1")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
