//! Desired state of one node: what its agent must make true. It is a keyed map of objects so
//! the coordinator can send deltas (upserts and deletes by key) and both sides can verify they
//! hold the same state by comparing a digest of the canonical encoding.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How a node takes part in EVPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvpnRole {
    /// Terminates VXLAN: advertises every local VNI (`advertise-all-vni`).
    Vtep,
    /// Carries EVPN routes between VTEPs without terminating any VNI (leaf/spine transit).
    Transit,
}

/// Underlay and EVPN control plane of the node: rendered into FRR by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Underlay {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Address on `lo` announced into the underlay (the VTEP on hypervisors).
    pub loopback: Ipv4Addr,
    /// Fabric interfaces with a BGP unnumbered, eBGP session each.
    pub neighbors: Vec<String>,
    pub evpn: EvpnRole,
}

/// A port bound on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPort {
    pub name: String,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// One tier present on this node as `vxlan<VNI>` in `brvx-<VNI>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Network {
    pub vni: u32,
    pub tenant: String,
    pub vpc: String,
    pub network: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ports: Vec<LocalPort>,
}

/// One object of a node's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DesiredObject {
    Underlay(Underlay),
    L2Network(L2Network),
}

/// The key of the node's underlay object.
pub const UNDERLAY_KEY: &str = "underlay";

/// Key of a network object.
pub fn network_key(vni: u32) -> String {
    format!("net/{vni}")
}

/// A node's whole desired state at an intent revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDesired {
    pub node: String,
    /// etcd revision of the newest intent change this state reflects.
    pub revision: u64,
    pub objects: BTreeMap<String, DesiredObject>,
}

/// A change between two desired states of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredDelta {
    pub upserts: Vec<(String, DesiredObject)>,
    pub deletes: Vec<String>,
}

impl NodeDesired {
    /// Digest of the objects (not of the revision): equal digests mean equal state, whatever
    /// revision stamped it. Uses the canonical JSON of a BTreeMap, so it is deterministic.
    pub fn digest(&self) -> String {
        digest_objects(&self.objects)
    }

    pub fn underlay(&self) -> Option<&Underlay> {
        match self.objects.get(UNDERLAY_KEY) {
            Some(DesiredObject::Underlay(u)) => Some(u),
            _ => None,
        }
    }

    pub fn networks(&self) -> impl Iterator<Item = &L2Network> {
        self.objects.values().filter_map(|o| match o {
            DesiredObject::L2Network(n) => Some(n),
            _ => None,
        })
    }

    /// What turns `self` into `next`.
    pub fn delta_to(&self, next: &NodeDesired) -> DesiredDelta {
        let mut delta = DesiredDelta::default();
        for (k, v) in &next.objects {
            if self.objects.get(k) != Some(v) {
                delta.upserts.push((k.clone(), v.clone()));
            }
        }
        for k in self.objects.keys() {
            if !next.objects.contains_key(k) {
                delta.deletes.push(k.clone());
            }
        }
        delta
    }

    /// Applies a delta in place.
    pub fn apply_delta(&mut self, revision: u64, delta: DesiredDelta) {
        for k in delta.deletes {
            self.objects.remove(&k);
        }
        for (k, v) in delta.upserts {
            self.objects.insert(k, v);
        }
        self.revision = revision;
    }
}

pub fn digest_objects(objects: &BTreeMap<String, DesiredObject>) -> String {
    let bytes = serde_json::to_vec(objects).expect("desired state always serializes");
    hex::encode(Sha256::digest(&bytes))
}

impl DesiredDelta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}
