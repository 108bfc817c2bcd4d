//! The one etcd key layout of StackFabric. Every key lives under a configurable root (default
//! `/stackfabric`), so several fabrics or test runs can share one etcd.
//!
//! ```text
//! {root}/intent/tenants/{tenant}                      Tenant (JSON)
//! {root}/intent/vpcs/{tenant}/{vpc}                   Vpc
//! {root}/intent/networks/{tenant}/{vpc}/{network}     Network
//! {root}/intent/ports/{tenant}/{port}                 PortBinding
//! {root}/intent/pools/{pool}                         Pool (public addresses)
//! {root}/intent/nat/{tenant}/{vpc}/{rule}             NatRule
//! {root}/intent/routes/{tenant}/{vpc}/{route}         StaticRoute
//! {root}/intent/lbs/{tenant}/{vpc}/{lb}               LoadBalancer
//! {root}/intent/acls/{tenant}/{vpc}/{list}            AclList
//! {root}/intent/dcs/{tenant}/{vpc}/{dc}               DirectConnect
//! {root}/inventory/nodes/{node}                       Node
//! {root}/inventory/drained/{node}                     present while a gateway is drained
//! {root}/placement/{tenant}/{vpc}                     Placement (written by the leader)
//! {root}/alloc/vni/{vni}                              owner "tenant/vpc/network", or
//!                                                     "dc:tenant/vpc/dc" (allocation)
//! {root}/alloc/vpc-id/{id}                            owner "tenant/vpc" (allocation)
//! {root}/nodes/{node}/heartbeat                       under the node's lease; presence = alive
//! {root}/nodes/{node}/status                          AgentStatus (JSON), under the same lease
//! {root}/coordinators/leader                          LeaderRecord, under the leader's lease
//! {root}/coordinators/replicas/{name}                 ReplicaRecord, under that replica's lease
//! {root}/coordinators/intent-seq                      rewritten by every intent write: its
//!                                                     mod revision fences validate-then-write
//! ```
//!
//! Intent and inventory are written only by coordinators; `nodes/{node}/…` only by that node's
//! agent (enforced with etcd roles in production). Names never contain `/` (validated), so
//! every segment is unambiguous.

/// Root-relative key builder.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("/stackfabric")
    }
}

impl Keys {
    pub fn new(root: &str) -> Self {
        Keys {
            root: root.trim_end_matches('/').to_string(),
        }
    }
    pub fn root(&self) -> &str {
        &self.root
    }
    /// Prefix of everything the coordinator compiles from (intent + inventory).
    pub fn intent_prefix(&self) -> String {
        format!("{}/intent/", self.root)
    }
    pub fn inventory_prefix(&self) -> String {
        format!("{}/inventory/", self.root)
    }
    pub fn tenant(&self, t: &str) -> String {
        format!("{}/intent/tenants/{t}", self.root)
    }
    pub fn vpc(&self, t: &str, v: &str) -> String {
        format!("{}/intent/vpcs/{t}/{v}", self.root)
    }
    pub fn network(&self, t: &str, v: &str, n: &str) -> String {
        format!("{}/intent/networks/{t}/{v}/{n}", self.root)
    }
    pub fn port(&self, t: &str, p: &str) -> String {
        format!("{}/intent/ports/{t}/{p}", self.root)
    }
    pub fn node(&self, n: &str) -> String {
        format!("{}/inventory/nodes/{n}", self.root)
    }
    pub fn pool(&self, p: &str) -> String {
        format!("{}/intent/pools/{p}", self.root)
    }
    pub fn nat(&self, t: &str, v: &str, r: &str) -> String {
        format!("{}/intent/nat/{t}/{v}/{r}", self.root)
    }
    pub fn route(&self, t: &str, v: &str, r: &str) -> String {
        format!("{}/intent/routes/{t}/{v}/{r}", self.root)
    }
    pub fn lb(&self, t: &str, v: &str, l: &str) -> String {
        format!("{}/intent/lbs/{t}/{v}/{l}", self.root)
    }
    pub fn acl(&self, t: &str, v: &str, l: &str) -> String {
        format!("{}/intent/acls/{t}/{v}/{l}", self.root)
    }
    pub fn dc(&self, t: &str, v: &str, d: &str) -> String {
        format!("{}/intent/dcs/{t}/{v}/{d}", self.root)
    }
    pub fn drained(&self, n: &str) -> String {
        format!("{}/inventory/drained/{n}", self.root)
    }
    pub fn placement(&self, t: &str, v: &str) -> String {
        format!("{}/placement/{t}/{v}", self.root)
    }
    /// Where a site's VPC ids are allocated. VPC ids are unique per site: they name a VPC's
    /// router on the site's gateways, and only that site's gateways ever serve it. The empty
    /// (default) site keeps the flat layout, so its prefix also lists named sites' keys:
    /// filter on [`KeyKind::VpcIdAlloc`]'s site.
    pub fn vpc_id_prefix(&self, site: &str) -> String {
        if site.is_empty() {
            format!("{}/alloc/vpc-id/", self.root)
        } else {
            format!("{}/alloc/vpc-id/{site}/", self.root)
        }
    }
    pub fn vpc_id(&self, site: &str, id: u32) -> String {
        format!("{}{id}", self.vpc_id_prefix(site))
    }
    /// Prefix of every allocation claim (VNIs and VPC ids).
    pub fn alloc_prefix(&self) -> String {
        format!("{}/alloc/", self.root)
    }
    pub fn vni_prefix(&self) -> String {
        format!("{}/alloc/vni/", self.root)
    }
    pub fn vni(&self, vni: u32) -> String {
        format!("{}/alloc/vni/{vni}", self.root)
    }
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.root)
    }
    pub fn heartbeat(&self, n: &str) -> String {
        format!("{}/nodes/{n}/heartbeat", self.root)
    }
    pub fn status(&self, n: &str) -> String {
        format!("{}/nodes/{n}/status", self.root)
    }
    /// The coordinator leader election key (value: the leader's name).
    pub fn leader(&self) -> String {
        format!("{}/coordinators/leader", self.root)
    }
    pub fn replica(&self, name: &str) -> String {
        format!("{}/coordinators/replicas/{name}", self.root)
    }
    /// Every coordinator intent write puts this key and compares its mod revision with the
    /// one its validation saw: writes through different replicas serialize (optimistic
    /// concurrency, like Kubernetes' resourceVersion) without a leader on the write path.
    pub fn intent_seq(&self) -> String {
        format!("{}/coordinators/intent-seq", self.root)
    }

    /// Classifies a key under the root.
    pub fn parse(&self, key: &str) -> Option<KeyKind> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        Some(match parts.as_slice() {
            ["intent", "tenants", t] => KeyKind::Tenant(t.to_string()),
            ["intent", "vpcs", t, v] => KeyKind::Vpc(t.to_string(), v.to_string()),
            ["intent", "networks", t, v, n] => {
                KeyKind::Network(t.to_string(), v.to_string(), n.to_string())
            }
            ["intent", "ports", t, p] => KeyKind::Port(t.to_string(), p.to_string()),
            ["inventory", "nodes", n] => KeyKind::Node(n.to_string()),
            ["intent", "pools", p] => KeyKind::Pool(p.to_string()),
            ["intent", "nat", t, v, r] => KeyKind::Nat(t.to_string(), v.to_string(), r.to_string()),
            ["intent", "routes", t, v, r] => {
                KeyKind::Route(t.to_string(), v.to_string(), r.to_string())
            }
            ["intent", "lbs", t, v, l] => KeyKind::Lb(t.to_string(), v.to_string(), l.to_string()),
            ["intent", "acls", t, v, l] => {
                KeyKind::Acl(t.to_string(), v.to_string(), l.to_string())
            }
            ["intent", "dcs", t, v, d] => KeyKind::Dc(t.to_string(), v.to_string(), d.to_string()),
            ["inventory", "drained", n] => KeyKind::Drained(n.to_string()),
            ["placement", t, v] => KeyKind::Placement(t.to_string(), v.to_string()),
            ["alloc", "vpc-id", i] => KeyKind::VpcIdAlloc(String::new(), i.parse().ok()?),
            ["alloc", "vpc-id", s, i] => KeyKind::VpcIdAlloc(s.to_string(), i.parse().ok()?),
            ["alloc", "vni", v] => KeyKind::VniAlloc(v.parse().ok()?),
            ["nodes", n, "heartbeat"] => KeyKind::Heartbeat(n.to_string()),
            ["nodes", n, "status"] => KeyKind::Status(n.to_string()),
            ["coordinators", "leader"] => KeyKind::Leader,
            ["coordinators", "replicas", n] => KeyKind::Replica(n.to_string()),
            ["coordinators", "intent-seq"] => KeyKind::IntentSeq,
            _ => return None,
        })
    }
}

/// What a key denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Tenant(String),
    Vpc(String, String),
    Network(String, String, String),
    Port(String, String),
    Node(String),
    VniAlloc(u32),
    Pool(String),
    Nat(String, String, String),
    Route(String, String, String),
    Lb(String, String, String),
    Acl(String, String, String),
    Dc(String, String, String),
    Drained(String),
    Placement(String, String),
    /// (site, id); the default site is "".
    VpcIdAlloc(String, u32),
    Heartbeat(String),
    Status(String),
    Leader,
    Replica(String),
    IntentSeq,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_parse() {
        let k = Keys::new("/sf-test/");
        assert_eq!(k.parse(&k.tenant("a")), Some(KeyKind::Tenant("a".into())));
        assert_eq!(
            k.parse(&k.network("a", "b", "c")),
            Some(KeyKind::Network("a".into(), "b".into(), "c".into()))
        );
        assert_eq!(
            k.parse(&k.vni(1_000_001)),
            Some(KeyKind::VniAlloc(1_000_001))
        );
        assert_eq!(
            k.parse(&k.status("hv1")),
            Some(KeyKind::Status("hv1".into()))
        );
        assert_eq!(
            k.parse(&k.vpc_id("", 7)),
            Some(KeyKind::VpcIdAlloc(String::new(), 7))
        );
        assert_eq!(
            k.parse(&k.vpc_id("fra1", 7)),
            Some(KeyKind::VpcIdAlloc("fra1".into(), 7))
        );
        assert_eq!(k.parse(&k.leader()), Some(KeyKind::Leader));
        assert_eq!(
            k.parse(&k.replica("c1")),
            Some(KeyKind::Replica("c1".into()))
        );
        assert_eq!(k.parse(&k.intent_seq()), Some(KeyKind::IntentSeq));
        assert_eq!(k.parse("/other/intent/tenants/a"), None);
        assert_eq!(k.parse("/sf-test/intent/tenants/a/extra"), None);
    }
}
