//! Compiles the .proto contracts with a vendored protoc, so no system protobuf-compiler is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; setting PROTOC before codegen is the documented way.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // The descriptor set feeds the coordinator's gRPC reflection service (grpcurl needs no
    // local .proto file).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // The coordinator's web console answers its browser with these messages as JSON.
        .type_attribute(".stackfabric.v1", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out.join("stackfabric_descriptor.bin"))
        .compile_protos(&["stackfabric.proto"], &["."])?;
    println!("cargo:rerun-if-changed=stackfabric.proto");
    Ok(())
}
