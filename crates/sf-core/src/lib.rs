//! StackFabric's pure core. It owns the intent model ([`model`]), the rules every write must
//! satisfy ([`validate`]), the per-node desired state agents receive ([`desired`]) and the
//! compiler between them ([`compile`]). Nothing here performs I/O, so every decision the
//! coordinator makes can be unit-tested exhaustively and replayed deterministically.

pub mod compile;
pub mod desired;
pub mod event;
pub mod maglev;
pub mod model;
pub mod placement;
pub mod status;
pub mod validate;

pub use model::{
    Intent, NatKind, NatRule, Network, Node, NodeRole, Placement, Pool, PortBinding, StaticRoute,
    Tenant, Vpc,
};
pub use validate::ValidationError;

/// VNIs handed out by the coordinator: deliberately above the 4,096 VLAN ids, and below the
/// 24-bit VXLAN limit.
pub const VNI_POOL: std::ops::RangeInclusive<u32> = 1_000_000..=2_000_000;
/// VPC ids (used in gateway interface names and transit addresses).
pub const VPC_ID_POOL: std::ops::RangeInclusive<u32> = 1..=65_000;
/// Largest VNI VXLAN can carry (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;
