//! Typed references to intent objects and the events that change intent (kube-rs's
//! `ObjectRef` and `watcher::Event`). The store decodes each etcd watch event once into an
//! [`IntentEvent`]; [`Intent::apply`] is the one place the model changes, and the compiler's
//! `affected_by` functions read the same [`ObjectRef`] to say which nodes a change touches.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};

use crate::model::{
    AclList, DirectConnect, Intent, LbDownReport, LoadBalancer, NatRule, Network, Node, Placement,
    Pool, PortBinding, StaticRoute, Tenant, Vpc,
};

/// A VPC, by tenant and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VpcRef {
    pub tenant: String,
    pub vpc: String,
}

/// An object that lives inside a VPC (network, NAT rule, route, ACL list, load balancer,
/// Direct Connect), by tenant, VPC and its own name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VpcChildRef {
    pub tenant: String,
    pub vpc: String,
    pub name: String,
}

/// A port binding, by tenant and port name (unique within the tenant).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRef {
    pub tenant: String,
    pub name: String,
}

impl VpcRef {
    pub fn new(tenant: impl Into<String>, vpc: impl Into<String>) -> Self {
        VpcRef {
            tenant: tenant.into(),
            vpc: vpc.into(),
        }
    }
}

impl VpcChildRef {
    pub fn new(tenant: impl Into<String>, vpc: impl Into<String>, name: impl Into<String>) -> Self {
        VpcChildRef {
            tenant: tenant.into(),
            vpc: vpc.into(),
            name: name.into(),
        }
    }
    /// The VPC this object belongs to.
    pub fn vpc_ref(&self) -> VpcRef {
        VpcRef::new(&self.tenant, &self.vpc)
    }
}

impl PortRef {
    pub fn new(tenant: impl Into<String>, name: impl Into<String>) -> Self {
        PortRef {
            tenant: tenant.into(),
            name: name.into(),
        }
    }
}

/// Names one object of intent, or one node's observations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectRef {
    Tenant(String),
    Vpc(VpcRef),
    Network(VpcChildRef),
    Port(PortRef),
    Node(String),
    Pool(String),
    Nat(VpcChildRef),
    Route(VpcChildRef),
    Acl(VpcChildRef),
    LoadBalancer(VpcChildRef),
    DirectConnect(VpcChildRef),
    /// The gateway placement of a VPC.
    Placement(VpcRef),
    /// A node's drain mark.
    Drained(String),
    /// The bridges a node reported it found locally (made outside StackFabric).
    Observed(String),
    /// The load balancer backends a gateway reported down, of the VPCs it serves.
    LbDown(String),
}

impl ObjectRef {
    /// The kind's name, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectRef::Tenant(_) => "tenant",
            ObjectRef::Vpc(_) => "vpc",
            ObjectRef::Network(_) => "network",
            ObjectRef::Port(_) => "port",
            ObjectRef::Node(_) => "node",
            ObjectRef::Pool(_) => "pool",
            ObjectRef::Nat(_) => "nat",
            ObjectRef::Route(_) => "route",
            ObjectRef::Acl(_) => "acl",
            ObjectRef::LoadBalancer(_) => "load-balancer",
            ObjectRef::DirectConnect(_) => "direct-connect",
            ObjectRef::Placement(_) => "placement",
            ObjectRef::Drained(_) => "drained",
            ObjectRef::Observed(_) => "observed",
            ObjectRef::LbDown(_) => "lb-down",
        }
    }
}

/// The value of one object, of the same kinds as [`ObjectRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Tenant(Tenant),
    Vpc(Vpc),
    Network(Network),
    Port(PortBinding),
    Node(Node),
    Pool(Pool),
    Nat(NatRule),
    Route(StaticRoute),
    Acl(AclList),
    LoadBalancer(LoadBalancer),
    DirectConnect(DirectConnect),
    Placement(Placement),
    /// A drain mark carries no value.
    Drained,
    /// VNIs of the bridges the node found; an empty set is the same as none reported.
    Observed(BTreeSet<u32>),
    /// Backend names down, by load balancer; an empty map is the same as none reported.
    LbDown(LbDownReport),
}

/// One change to intent: an object put (created or replaced) under its reference, or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentEvent {
    Put(ObjectRef, Object),
    Delete(ObjectRef),
}

impl IntentEvent {
    /// The object the event is about.
    pub fn object_ref(&self) -> &ObjectRef {
        match self {
            IntentEvent::Put(r, _) | IntentEvent::Delete(r) => r,
        }
    }
}

/// A put whose value is not of its reference's kind (a bug in whoever built the event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} reference cannot hold this value")]
pub struct KindMismatch {
    pub kind: &'static str,
}

/// Puts `value` under `key`, or removes `key` when there is no value.
fn set<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

impl Intent {
    /// Applies one event. The reference is authoritative for where the object is kept.
    pub fn apply(&mut self, event: IntentEvent) -> Result<(), KindMismatch> {
        let (r, value) = match event {
            IntentEvent::Put(r, v) => (r, Some(v)),
            IntentEvent::Delete(r) => (r, None),
        };
        let mismatch = KindMismatch { kind: r.kind() };
        // Pulls the expected variant out of the value; a delete carries None.
        macro_rules! take {
            ($variant:ident) => {
                match value {
                    None => None,
                    Some(Object::$variant(v)) => Some(v),
                    Some(_) => return Err(mismatch),
                }
            };
        }
        match r {
            ObjectRef::Tenant(n) => set(&mut self.tenants, n, take!(Tenant)),
            ObjectRef::Vpc(v) => set(&mut self.vpcs, v.clone(), take!(Vpc)),
            ObjectRef::Network(c) => set(&mut self.networks, c.clone(), take!(Network)),
            ObjectRef::Port(p) => set(&mut self.ports, p.clone(), take!(Port)),
            ObjectRef::Node(n) => set(&mut self.nodes, n, take!(Node)),
            ObjectRef::Pool(n) => set(&mut self.pools, n, take!(Pool)),
            ObjectRef::Nat(c) => set(&mut self.nat_rules, c.clone(), take!(Nat)),
            ObjectRef::Route(c) => set(&mut self.routes, c.clone(), take!(Route)),
            ObjectRef::Acl(c) => set(&mut self.acls, c.clone(), take!(Acl)),
            ObjectRef::LoadBalancer(c) => {
                set(&mut self.load_balancers, c.clone(), take!(LoadBalancer))
            }
            ObjectRef::DirectConnect(c) => {
                set(&mut self.direct_connects, c.clone(), take!(DirectConnect))
            }
            ObjectRef::Placement(v) => set(&mut self.placements, v.clone(), take!(Placement)),
            ObjectRef::Drained(n) => match value {
                None => {
                    self.drained.remove(&n);
                }
                Some(Object::Drained) => {
                    self.drained.insert(n);
                }
                Some(_) => return Err(mismatch),
            },
            ObjectRef::Observed(n) => {
                let vnis = take!(Observed).filter(|v| !v.is_empty());
                match (self.observed_vnis.entry(n), vnis) {
                    (Entry::Occupied(mut e), Some(v)) => {
                        e.insert(v);
                    }
                    (Entry::Occupied(e), None) => {
                        e.remove();
                    }
                    (Entry::Vacant(e), Some(v)) => {
                        e.insert(v);
                    }
                    (Entry::Vacant(_), None) => {}
                }
            }
            ObjectRef::LbDown(n) => match take!(LbDown).filter(|r| !r.is_empty()) {
                Some(r) => {
                    self.lb_down.insert(n, r);
                }
                None => {
                    self.lb_down.remove(&n);
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> Pool {
        Pool {
            name: name.into(),
            cidr: "203.0.113.0/24".parse().unwrap(),
            site: String::new(),
        }
    }

    #[test]
    fn put_then_delete_round_trips() {
        let mut i = Intent::default();
        let r = ObjectRef::Pool("public".into());
        i.apply(IntentEvent::Put(r.clone(), Object::Pool(pool("public"))))
            .unwrap();
        assert_eq!(i.pools.len(), 1);
        i.apply(IntentEvent::Delete(r)).unwrap();
        assert!(i.pools.is_empty());
    }

    #[test]
    fn a_value_of_another_kind_is_refused_and_changes_nothing() {
        let mut i = Intent::default();
        let err = i
            .apply(IntentEvent::Put(
                ObjectRef::Tenant("t".into()),
                Object::Pool(pool("p")),
            ))
            .unwrap_err();
        assert_eq!(err.kind, "tenant");
        assert_eq!(i, Intent::default());
    }

    #[test]
    fn an_empty_observation_removes_the_entry() {
        let mut i = Intent::default();
        let r = ObjectRef::Observed("hv1".into());
        i.apply(IntentEvent::Put(r.clone(), Object::Observed([7].into())))
            .unwrap();
        assert_eq!(i.observed_vnis["hv1"], BTreeSet::from([7]));
        i.apply(IntentEvent::Put(r, Object::Observed(BTreeSet::new())))
            .unwrap();
        assert!(i.observed_vnis.is_empty());
    }
}
