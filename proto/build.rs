//! Generates the gRPC contracts from `proto/*.proto` (needs `protoc`, which
//! `scripts/install-deps.sh` installs).

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(
        &["proto/media_control.proto", "proto/signalling_peer.proto"],
        &["proto"],
    )
}
