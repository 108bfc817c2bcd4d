//! `sf-gateway-agent` as a library: the SoftGate dataplane of a gateway node. One network
//! namespace per VPC router (the Neutron L3-agent model, no VRF needed), joined to each tier's
//! `brvx-<VNI>` by a veth carrying the tier gateway address and the VPC's virtual MAC, and to
//! the host by a transit veth; NAT in one nftables table per VPC built on maps; the VPC's
//! public /32s routed into the namespace and announced by the host's FRR.
//!
//! - [`names`]: names and transit addresses derived from the router id (pure).
//! - [`nft`]: the NAT and load balancer ruleset (pure renderer, Maglev maps).
//! - [`health`]: load balancer health checks, one thread per VPC namespace.
//! - [`plan`]: lease decisions and the observed → actions planner with its in-memory twin.
//! - [`device`]: observation (`ip -j`, `nft`) and execution.
//! - [`conntrack`]: cutting the flows of translations the router no longer performs.
//! - [`dc`]: Direct Connect: per-VPC FRR (eBGP with the customer) and its status poller.
//! - [`dataplane`]: the [`sf_agent::Dataplane`] implementation.

pub mod conntrack;
pub mod dataplane;
pub mod dc;
pub mod device;
pub mod fence;
pub mod health;
pub mod names;
pub mod nft;
pub mod plan;
