//! The StackFabric coordinator as a library: [`fabric`] keeps the intent index rebuilt from
//! etcd and each node's compiled desired state; [`api`] serves the northbound FabricApi;
//! [`sync`] serves the southbound AgentSync streams; [`convert`] maps proto ↔ model;
//! [`grpc_health`] serves gRPC health and reflection; [`listen`] binds the gRPC socket;
//! [`identity`] extracts node identity from mTLS certificates and checks API credentials;
//! [`rest`] serves the Netris-compatible REST API CloudStack drives; [`console`] serves the
//! operator's web console.

pub mod api;
pub mod console;
pub mod convert;
pub mod election;
pub mod fabric;
pub mod grpc_health;
pub mod grpc_tls;
pub mod identity;
pub mod listen;
pub mod rest;
pub mod sync;
