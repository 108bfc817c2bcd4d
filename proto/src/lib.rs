//! Generated gRPC types for StackFabric: `FabricApi` (northbound, used by sfctl and automation) and
//! `AgentSync` (southbound, one bidirectional stream per agent). The wire contract lives in
//! `proto/stackfabric.proto`; this crate only re-exports what tonic generates from it.
#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("stackfabric.v1");

    /// The encoded `FileDescriptorSet` of `stackfabric.proto`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("stackfabric_descriptor");
}
