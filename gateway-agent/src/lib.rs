//! `sf-gateway-agent` as a library: the SoftGate dataplane of a gateway node. One network
//! namespace per VPC router (the Neutron L3-agent model, no VRF needed), joined to each tier's
//! `brvx-<VNI>` by a veth carrying the tier gateway address and the VPC's virtual MAC, and to
//! the host by a transit veth; NAT in one nftables table per VPC built on maps; the VPC's
//! public /32s routed into the namespace and announced by the host's FRR. Each VPC has a
//! primary and a warm standby gateway; the fabric decides which one forwards.
//!
//! - [`names`]: names and transit addresses derived from the router id (pure).
//! - [`nft`]: the NAT and load balancer ruleset (pure renderer, Maglev maps).
//! - [`health`]: load balancer health checks, one thread per VPC namespace.
//! - [`plan`]: the observed → actions planner with its in-memory twin.
//! - [`plan6`]: the IPv6 side of a dual-stack router's plan.
//! - [`ra`]: router advertisements of the active dual-stack routers (SLAAC).
//! - [`failover`]: which built routers forward, from the fabric's view (BFD, anchors).
//! - [`flip`]: the host changes of a flip and their netlink executor.
//! - [`kernel`]: the long-lived netlink sockets, one per VPC namespace.
//! - [`nfrules`]: rule counters from a netfilter netlink dump.
//! - [`device`]: observation (netlink, `nft`) and the former `ip` executor.
//! - [`exec`]: the netlink executor of the planner's actions.
//! - [`conntrack`]: cutting the flows of translations the router no longer performs.
//! - [`dc`]: Direct Connect: per-VPC FRR (eBGP with the customer) and its status poller.
//! - [`dataplane`]: the [`sf_agent::Dataplane`] implementation.

pub mod conntrack;
pub mod dataplane;
pub mod dc;
pub mod device;
pub mod exec;
pub mod failover;
pub mod fence;
pub mod flip;
pub mod health;
pub mod kernel;
pub mod names;
pub mod nfrules;
pub mod nft;
pub mod nft6;
pub mod plan;
pub mod plan6;
pub mod ra;
