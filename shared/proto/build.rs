//! Compiles every `.proto` under the repository's `proto/` folder with protox,
//! so no `protoc` binary is needed, and writes the encoded descriptor set that
//! gRPC reflection serves.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "rtim/events/v1/event.proto",
    "rtim/bus/v1/envelope.proto",
    "rtim/bus/v1/dead_letter.proto",
    "rtim/ingestion/v1/ingestion.proto",
    "rtim/ingestion/v1/dead_letters.proto",
    "rtim/profile/v1/profile.proto",
    "rtim/decisioning/v1/decisioning.proto",
    "rtim/recommendations/v1/recommendations.proto",
    "rtim/surveys/v1/surveys.proto",
    "rtim/gamification/v1/gamification.proto",
    "rtim/bench/v1/echo.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let descriptors = protox::compile(FILES, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("rtim_descriptor.bin"), descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
