//! Compiles the .proto contracts with a vendored protoc, so no system protobuf-compiler is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; setting PROTOC before codegen is the documented way.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(&["stackfabric.proto"], &["."])?;
    println!("cargo:rerun-if-changed=stackfabric.proto");
    Ok(())
}
