//! `sf-hypervisor-agent` as a library: [`plan`] is the pure planner for VXLAN/bridge layout,
//! [`dataplane`] executes plans on Linux and drives FRR.

pub mod dataplane;
pub mod plan;
