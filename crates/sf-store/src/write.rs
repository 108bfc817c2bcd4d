//! The one write surface of intent: per object kind, the compares and operations of a create,
//! replace or delete, allocation claims included. This is the only place that knows which
//! compares guard a write (the object absent or present, its parents present, its VNI or VPC
//! id unclaimed); the gRPC API (through [`crate::intent::IntentStore`]) and the REST API (which
//! adds its own metadata to the same transaction) both build their transactions from it.
//!
//! | kind            | create compares                                   | claim             |
//! |-----------------|---------------------------------------------------|-------------------|
//! | tenant, node, pool | object absent                                  |                   |
//! | VPC             | absent, `alloc/vpc-id/<site>/<id>` absent, tenant present | VPC id    |
//! | network         | absent, `alloc/vni/<vni>` absent, VPC present     | VNI               |
//! | Direct Connect  | absent, `alloc/vni/<vni>` absent, VPC and switch present | VNI        |
//! | NAT, route, LB, ACL list | absent, VPC present                      |                   |
//! | port            | absent, network and node present                  |                   |
//!
//! A replace compares the object present instead of absent (and keeps its claim: the VNI or
//! id must not change); an upsert does not compare the object at all. A delete compares the
//! object present and releases its claim.

use sf_core::event::{Object, ObjectRef};
use sf_core::model::Intent;

use crate::keys::Keys;
use crate::{Compare, Op};

/// The compares and operations of one etcd transaction under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSet {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("model types always serialize")
}

fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put {
        key,
        value,
        lease: 0,
    }
}

/// How a put treats an existing object under the same key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Replace,
    Upsert,
}

/// The key of an object (panics for the kinds that are not written as intent: placements are
/// the placement controller's, drain marks carry no name, observed bridges are not stored).
pub fn key_of(keys: &Keys, obj: &Object) -> String {
    match obj {
        Object::Tenant(t) => keys.tenant(&t.name),
        Object::Vpc(v) => keys.vpc(&v.tenant, &v.name),
        Object::Network(n) => keys.network(&n.tenant, &n.vpc, &n.name),
        Object::Port(p) => keys.port(&p.tenant, &p.name),
        Object::Node(n) => keys.node(&n.name),
        Object::Pool(p) => keys.pool(&p.name),
        Object::Nat(r) => keys.nat(&r.tenant, &r.vpc, &r.name),
        Object::Route(r) => keys.route(&r.tenant, &r.vpc, &r.name),
        Object::Acl(l) => keys.acl(&l.tenant, &l.vpc, &l.name),
        Object::LoadBalancer(l) => keys.lb(&l.tenant, &l.vpc, &l.name),
        Object::DirectConnect(d) => keys.dc(&d.tenant, &d.vpc, &d.name),
        Object::Placement(_) | Object::Drained | Object::Observed(_) | Object::LbDown(_) => {
            panic!("placements, drain marks, observed bridges and load balancer reports are not written as objects")
        }
    }
}

/// The key of a referenced object (panics for observed bridges and load balancer reports,
/// which have none).
pub fn ref_key(keys: &Keys, r: &ObjectRef) -> String {
    match r {
        ObjectRef::Tenant(t) => keys.tenant(t),
        ObjectRef::Vpc(v) => keys.vpc(&v.tenant, &v.vpc),
        ObjectRef::Network(c) => keys.network(&c.tenant, &c.vpc, &c.name),
        ObjectRef::Port(p) => keys.port(&p.tenant, &p.name),
        ObjectRef::Node(n) => keys.node(n),
        ObjectRef::Pool(p) => keys.pool(p),
        ObjectRef::Nat(c) => keys.nat(&c.tenant, &c.vpc, &c.name),
        ObjectRef::Route(c) => keys.route(&c.tenant, &c.vpc, &c.name),
        ObjectRef::Acl(c) => keys.acl(&c.tenant, &c.vpc, &c.name),
        ObjectRef::LoadBalancer(c) => keys.lb(&c.tenant, &c.vpc, &c.name),
        ObjectRef::DirectConnect(c) => keys.dc(&c.tenant, &c.vpc, &c.name),
        ObjectRef::Placement(v) => keys.placement(&v.tenant, &v.vpc),
        ObjectRef::Drained(n) => keys.drained(n),
        ObjectRef::Observed(_) => panic!("observed bridges are not stored"),
        ObjectRef::LbDown(_) => panic!("load balancer reports are not stored"),
    }
}

/// The objects that must exist for `obj` to be written.
fn parents(keys: &Keys, obj: &Object) -> Vec<String> {
    match obj {
        Object::Vpc(v) => vec![keys.tenant(&v.tenant)],
        Object::Network(n) => vec![keys.vpc(&n.tenant, &n.vpc)],
        Object::Nat(r) => vec![keys.vpc(&r.tenant, &r.vpc)],
        Object::Route(r) => vec![keys.vpc(&r.tenant, &r.vpc)],
        Object::Acl(l) => vec![keys.vpc(&l.tenant, &l.vpc)],
        Object::LoadBalancer(l) => vec![keys.vpc(&l.tenant, &l.vpc)],
        Object::DirectConnect(d) => vec![keys.vpc(&d.tenant, &d.vpc), keys.node(&d.switch)],
        Object::Port(p) => vec![
            keys.network(&p.tenant, &p.vpc, &p.network),
            keys.node(&p.node),
        ],
        _ => vec![],
    }
}

/// The allocation key an object claims and the owner recorded in it: a VPC its id in its
/// site, a network or Direct Connect its VNI.
fn claim(keys: &Keys, obj: &Object) -> Option<(String, String)> {
    match obj {
        Object::Vpc(v) => Some((
            keys.vpc_id(&v.site, v.id),
            format!("{}/{}", v.tenant, v.name),
        )),
        Object::Network(n) => Some((
            keys.vni(n.vni),
            format!("{}/{}/{}", n.tenant, n.vpc, n.name),
        )),
        Object::DirectConnect(d) => Some((
            keys.vni(d.vni),
            format!("dc:{}/{}/{}", d.tenant, d.vpc, d.name),
        )),
        _ => None,
    }
}

/// The allocation key an object releases when deleted (a VPC without an id holds none).
fn release(keys: &Keys, obj: &Object) -> Option<String> {
    match obj {
        Object::Vpc(v) if v.id == 0 => None,
        _ => claim(keys, obj).map(|(k, _)| k),
    }
}

/// The object `r` names, as `intent` holds it (only the kinds with claims are looked up).
fn claimant(intent: &Intent, r: &ObjectRef) -> Option<Object> {
    match r {
        ObjectRef::Vpc(v) => intent.vpcs.get(v).cloned().map(Object::Vpc),
        ObjectRef::Network(c) => intent.networks.get(c).cloned().map(Object::Network),
        ObjectRef::DirectConnect(c) => intent
            .direct_connects
            .get(c)
            .cloned()
            .map(Object::DirectConnect),
        _ => None,
    }
}

impl WriteSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The set with `other`'s compares and operations appended.
    pub fn and(mut self, other: WriteSet) -> Self {
        self.extend(other);
        self
    }

    pub fn extend(&mut self, other: WriteSet) {
        self.compares.extend(other.compares);
        self.ops.extend(other.ops);
    }

    pub fn is_empty(&self) -> bool {
        self.compares.is_empty() && self.ops.is_empty()
    }

    fn put_object(&mut self, keys: &Keys, obj: &Object, mode: Mode) -> &mut Self {
        let key = key_of(keys, obj);
        match mode {
            Mode::Create => self.compares.push(Compare::Absent(key.clone())),
            Mode::Replace => self.compares.push(Compare::Present(key.clone())),
            Mode::Upsert => {}
        }
        let claim = claim(keys, obj).filter(|_| mode == Mode::Create);
        if let Some((k, _)) = &claim {
            self.compares.push(Compare::Absent(k.clone()));
        }
        self.compares
            .extend(parents(keys, obj).into_iter().map(Compare::Present));
        self.ops.push(put(key, encode_object(obj)));
        if let Some((k, owner)) = claim {
            self.ops.push(put(k, owner.into_bytes()));
        }
        self
    }

    /// Creates `obj`: it must be absent, its parents present, its claim (a VPC's id, a
    /// network's or Direct Connect's VNI, which must be chosen) free; the claim is taken.
    pub fn create(&mut self, keys: &Keys, obj: &Object) -> &mut Self {
        self.put_object(keys, obj, Mode::Create)
    }

    /// Overwrites the existing `obj` (same key; a claim must not change).
    pub fn replace(&mut self, keys: &Keys, obj: &Object) -> &mut Self {
        self.put_object(keys, obj, Mode::Replace)
    }

    /// Creates or overwrites `obj` (parents must exist; for kinds without claims).
    pub fn upsert(&mut self, keys: &Keys, obj: &Object) -> &mut Self {
        debug_assert!(claim(keys, obj).is_none(), "an upsert cannot claim");
        self.put_object(keys, obj, Mode::Upsert)
    }

    /// Deletes the object `r` names (it must be present) and releases its claim, as `intent`
    /// records it.
    pub fn delete(&mut self, keys: &Keys, r: &ObjectRef, intent: &Intent) -> &mut Self {
        let key = ref_key(keys, r);
        let freed = claimant(intent, r).and_then(|o| release(keys, &o));
        self.delete_keys(key, freed)
    }

    /// Deletes `obj` (it must be present) and releases its claim.
    pub fn delete_object(&mut self, keys: &Keys, obj: &Object) -> &mut Self {
        self.delete_keys(key_of(keys, obj), release(keys, obj))
    }

    fn delete_keys(&mut self, key: String, freed: Option<String>) -> &mut Self {
        self.compares.push(Compare::Present(key.clone()));
        self.ops.push(Op::Delete { key });
        if let Some(key) = freed {
            self.ops.push(Op::Delete { key });
        }
        self
    }

    /// The compares and operations.
    pub fn into_parts(self) -> (Vec<Compare>, Vec<Op>) {
        (self.compares, self.ops)
    }
}

fn encode_object(obj: &Object) -> Vec<u8> {
    match obj {
        Object::Tenant(t) => encode(t),
        Object::Vpc(v) => encode(v),
        Object::Network(n) => encode(n),
        Object::Port(p) => encode(p),
        Object::Node(n) => encode(n),
        Object::Pool(p) => encode(p),
        Object::Nat(r) => encode(r),
        Object::Route(r) => encode(r),
        Object::Acl(l) => encode(l),
        Object::LoadBalancer(l) => encode(l),
        Object::DirectConnect(d) => encode(d),
        Object::Placement(p) => encode(p),
        Object::Drained | Object::Observed(_) | Object::LbDown(_) => {
            panic!("drain marks, observed bridges and load balancer reports are not written as objects")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::event::VpcChildRef;
    use sf_core::model::{Network, Vpc};

    fn net() -> Network {
        Network {
            ipv6_prefix: None,
            tenant: "t".into(),
            vpc: "v".into(),
            name: "n".into(),
            cidr: "10.0.1.0/24".parse().unwrap(),
            vni: 1_000_001,
            gateway: "10.0.1.1".parse().unwrap(),
        }
    }

    #[test]
    fn a_network_claims_its_vni_and_releases_it() {
        let k = Keys::new("/sf");
        let n = net();
        let mut w = WriteSet::new();
        w.create(&k, &Object::Network(n.clone()));
        assert_eq!(
            w.compares,
            vec![
                Compare::Absent("/sf/intent/networks/t/v/n".into()),
                Compare::Absent(k.vni(1_000_001)),
                Compare::Present(k.vpc("t", "v")),
            ]
        );
        assert_eq!(w.ops.len(), 2);
        assert_eq!(
            w.ops[1],
            put(k.vni(1_000_001), b"t/v/n".to_vec()),
            "the claim names its owner"
        );
        let mut intent = Intent::default();
        intent.networks.insert(n.key(), n.clone());
        let r = ObjectRef::Network(VpcChildRef::new("t", "v", "n"));
        let mut d = WriteSet::new();
        d.delete(&k, &r, &intent);
        let mut d2 = WriteSet::new();
        d2.delete_object(&k, &Object::Network(n));
        assert_eq!(d, d2, "by reference or by object: the same delete");
        assert_eq!(
            d.ops,
            vec![
                Op::Delete {
                    key: k.network("t", "v", "n")
                },
                Op::Delete {
                    key: k.vni(1_000_001)
                },
            ]
        );
    }

    #[test]
    fn a_vpc_without_id_releases_nothing_and_replace_claims_nothing() {
        let k = Keys::new("/sf");
        let v = Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "t".into(),
            name: "v".into(),
            cidr: "10.0.0.0/16".parse().unwrap(),
            site: String::new(),
            id: 0,
        };
        let mut d = WriteSet::new();
        d.delete_object(&k, &Object::Vpc(v.clone()));
        assert_eq!(d.ops.len(), 1);
        let mut r = WriteSet::new();
        r.replace(&k, &Object::Vpc(v));
        assert_eq!(
            r.compares,
            vec![
                Compare::Present(k.vpc("t", "v")),
                Compare::Present(k.tenant("t"))
            ]
        );
        assert_eq!(r.ops.len(), 1);
    }
}
