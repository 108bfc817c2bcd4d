//! `sf-hypervisor-agent` as a library: [`dataplane`] converges a KVM host to its desired state
//! (VTEP, CloudStack-layout VXLAN bridges planned by `sf_linux::l2`, FRR EVPN).

pub mod acl;
pub mod acl6;
pub mod cut;
pub mod dataplane;
pub mod pin;
