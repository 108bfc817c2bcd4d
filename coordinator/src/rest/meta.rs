//! REST metadata in etcd, and the one-transaction writes that change it together with the
//! StackFabric objects it maps to.
//!
//! Layout (under the coordinator's etcd root; sf-store's parser ignores these keys, so the
//! coordinator's index never sees them):
//!
//! ```text
//! {root}/rest/seq                       last Netris id handed out (decimal); ids are unique
//!                                       across kinds and never reused
//! {root}/rest/tenants/{id}              {"id", "name"}: Netris tenant id ↔ StackFabric tenant
//! {root}/rest/objects/{kind}/{id}       Record (JSON): kind is vpc, allocation, subnet, vnet,
//!                                       nat, l4lb, acl or route
//! ```
//!
//! A [`Record`] holds the Netris id and name, the owning tenant, the Netris VPC id, the
//! normalized spec (compared for idempotent creates, rendered back on lists) and `sf`, the
//! StackFabric object it owns, if any. Every REST write is one etcd transaction holding the
//! record change, the id counter (compare on its revision), and the StackFabric object change
//! with the same compares sf-store's own writes use (object absent, parent present, VNI and VPC
//! id claims absent), so a rejected or raced write changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sf_core::model::{
    AclList, Intent, LoadBalancer, NatRule, Network, Pool, StaticRoute, Tenant, Vpc,
};
use sf_core::validate::{self, ValidationError};
use sf_store::{Compare, KvStore, Op};

use super::wire::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Vpc,
    Allocation,
    Subnet,
    Vnet,
    Nat,
    L4lb,
    Acl,
    Route,
}

impl Kind {
    pub fn seg(self) -> &'static str {
        match self {
            Kind::Vpc => "vpc",
            Kind::Allocation => "allocation",
            Kind::Subnet => "subnet",
            Kind::Vnet => "vnet",
            Kind::Nat => "nat",
            Kind::L4lb => "l4lb",
            Kind::Acl => "acl",
            Kind::Route => "route",
        }
    }
    pub fn what(self) -> &'static str {
        match self {
            Kind::Vpc => "VPC",
            Kind::Allocation => "IPAM allocation",
            Kind::Subnet => "IPAM subnet",
            Kind::Vnet => "vnet",
            Kind::Nat => "NAT rule",
            Kind::L4lb => "L4 load balancer",
            Kind::Acl => "ACL",
            Kind::Route => "route",
        }
    }
}

/// The normalized Netris object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec", rename_all = "kebab-case")]
pub enum Spec {
    Vpc,
    Allocation(AllocSpec),
    Subnet(SubnetSpec),
    Vnet(VnetSpec),
    Nat(NatSpec),
    L4lb(LbSpec),
    Acl(AclSpec),
    Route(RouteSpec),
    /// An IPv6 allocation or subnet (a dual-stack tier's): kept and listed back, no dataplane
    /// yet (that comes with IPv6 support).
    Ip6(Ip6Spec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Vpc => Kind::Vpc,
            Spec::Allocation(_) => Kind::Allocation,
            Spec::Subnet(_) => Kind::Subnet,
            Spec::Vnet(_) => Kind::Vnet,
            Spec::Nat(_) => Kind::Nat,
            Spec::L4lb(_) => Kind::L4lb,
            Spec::Acl(_) => Kind::Acl,
            Spec::Route(_) => Kind::Route,
            Spec::Ip6(s) if s.allocation => Kind::Allocation,
            Spec::Ip6(_) => Kind::Subnet,
        }
    }
}

/// Which StackFabric object a record owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SfRef {
    Vpc {
        tenant: String,
        name: String,
    },
    /// `adopted`: the pool existed before (created by an operator); the record only points at
    /// it and deleting the record leaves the pool.
    Pool {
        name: String,
        adopted: bool,
    },
    Network {
        tenant: String,
        vpc: String,
        name: String,
    },
    Nat {
        tenant: String,
        vpc: String,
        name: String,
    },
    Lb {
        tenant: String,
        vpc: String,
        name: String,
    },
    Route {
        tenant: String,
        vpc: String,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub name: String,
    /// The owning tenant (a StackFabric tenant name).
    pub tenant: String,
    /// Netris VPC id ([`SYSTEM_VPC_ID`] for public objects); a VPC's own id for a VPC.
    pub vpc: u64,
    pub spec: Spec,
    #[serde(default)]
    pub sf: Option<SfRef>,
}

impl Record {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }
}

/// A StackFabric object to create.
#[derive(Debug, Clone, PartialEq)]
pub enum SfObj {
    Vpc(Vpc),
    Pool(Pool),
    Network(Network),
    Nat(NatRule),
    Lb(LoadBalancer),
    Route(StaticRoute),
}

impl SfObj {
    pub fn sf_ref(&self) -> SfRef {
        match self {
            SfObj::Vpc(v) => SfRef::Vpc {
                tenant: v.tenant.clone(),
                name: v.name.clone(),
            },
            SfObj::Pool(p) => SfRef::Pool {
                name: p.name.clone(),
                adopted: false,
            },
            SfObj::Network(n) => SfRef::Network {
                tenant: n.tenant.clone(),
                vpc: n.vpc.clone(),
                name: n.name.clone(),
            },
            SfObj::Nat(r) => SfRef::Nat {
                tenant: r.tenant.clone(),
                vpc: r.vpc.clone(),
                name: r.name.clone(),
            },
            SfObj::Lb(l) => SfRef::Lb {
                tenant: l.tenant.clone(),
                vpc: l.vpc.clone(),
                name: l.name.clone(),
            },
            SfObj::Route(r) => SfRef::Route {
                tenant: r.tenant.clone(),
                vpc: r.vpc.clone(),
                name: r.name.clone(),
            },
        }
    }

    /// Validation with sf-core's rules, exactly as the gRPC API applies them.
    pub fn validate(&self, intent: &Intent) -> Result<(), ValidationError> {
        match self {
            SfObj::Vpc(v) => validate::validate_vpc(intent, v),
            SfObj::Pool(p) => validate::validate_pool(intent, p),
            SfObj::Network(n) => validate::validate_network(intent, n),
            SfObj::Nat(r) => validate::validate_nat(intent, r),
            SfObj::Lb(l) => validate::validate_lb(intent, l),
            SfObj::Route(r) => validate::validate_route(intent, r),
        }
    }
}

fn k3(t: &str, v: &str, n: &str) -> (String, String, String) {
    (t.to_string(), v.to_string(), n.to_string())
}

/// Whether the referenced StackFabric object exists.
pub fn sf_exists(intent: &Intent, r: &SfRef) -> bool {
    match r {
        SfRef::Vpc { tenant, name } => intent.vpcs.contains_key(&(tenant.clone(), name.clone())),
        SfRef::Pool { name, .. } => intent.pools.contains_key(name),
        SfRef::Network { tenant, vpc, name } => {
            intent.networks.contains_key(&k3(tenant, vpc, name))
        }
        SfRef::Nat { tenant, vpc, name } => intent.nat_rules.contains_key(&k3(tenant, vpc, name)),
        SfRef::Lb { tenant, vpc, name } => {
            intent.load_balancers.contains_key(&k3(tenant, vpc, name))
        }
        SfRef::Route { tenant, vpc, name } => intent.routes.contains_key(&k3(tenant, vpc, name)),
    }
}

/// Checks that the referenced object may be deleted (sf-core's rules, plus: a VPC with load
/// balancers is in use).
pub fn check_remove(intent: &Intent, r: &SfRef) -> ApiResult<()> {
    match r {
        SfRef::Vpc { tenant, name } => {
            validate::check_delete_vpc(intent, tenant, name)?;
            if let Some(l) = intent
                .load_balancers
                .values()
                .find(|l| &l.tenant == tenant && &l.vpc == name)
            {
                return Err(ApiError::conflict(format!(
                    "invalid vpc.name: VPC {name:?} still has load balancer {:?}",
                    l.name
                )));
            }
            Ok(())
        }
        SfRef::Pool { adopted: true, .. } => Ok(()),
        SfRef::Pool { name, .. } => Ok(validate::check_delete_pool(intent, name)?),
        SfRef::Network { tenant, vpc, name } => {
            Ok(validate::check_delete_network(intent, tenant, vpc, name)?)
        }
        SfRef::Nat { tenant, vpc, name } => {
            Ok(validate::check_delete_nat(intent, tenant, vpc, name)?)
        }
        SfRef::Lb { tenant, vpc, name } => {
            Ok(validate::check_delete_lb(intent, tenant, vpc, name)?)
        }
        SfRef::Route { tenant, vpc, name } => {
            Ok(validate::check_delete_route(intent, tenant, vpc, name)?)
        }
    }
}

/// A copy of `intent` without the referenced object (to validate a replacement).
pub fn without(intent: &Intent, r: &SfRef) -> Intent {
    let mut i = intent.clone();
    match r {
        SfRef::Vpc { tenant, name } => {
            i.vpcs.remove(&(tenant.clone(), name.clone()));
        }
        SfRef::Pool { name, .. } => {
            i.pools.remove(name);
        }
        SfRef::Network { tenant, vpc, name } => {
            i.networks.remove(&k3(tenant, vpc, name));
        }
        SfRef::Nat { tenant, vpc, name } => {
            i.nat_rules.remove(&k3(tenant, vpc, name));
        }
        SfRef::Lb { tenant, vpc, name } => {
            i.load_balancers.remove(&k3(tenant, vpc, name));
        }
        SfRef::Route { tenant, vpc, name } => {
            i.routes.remove(&k3(tenant, vpc, name));
        }
    }
    i
}

/// Everything under `{root}/rest/`, read at one revision.
#[derive(Debug, Default, Clone)]
pub struct Db {
    pub tenants: BTreeMap<u64, String>,
    /// Records with their etcd mod revision.
    pub recs: BTreeMap<u64, (Record, i64)>,
    /// Last id handed out and the counter key's mod revision (0 when absent).
    pub seq: (u64, i64),
}

pub struct RestKeys {
    root: String,
}

impl RestKeys {
    pub fn new(root: &str) -> Self {
        RestKeys {
            root: format!("{}/rest/", root.trim_end_matches('/')),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.root
    }
    pub fn seq(&self) -> String {
        format!("{}seq", self.root)
    }
    pub fn tenant(&self, id: u64) -> String {
        format!("{}tenants/{id}", self.root)
    }
    pub fn object(&self, kind: Kind, id: u64) -> String {
        format!("{}objects/{}/{id}", self.root, kind.seg())
    }
}

#[derive(Serialize, Deserialize)]
struct TenantRec {
    id: u64,
    name: String,
}

impl Db {
    pub async fn load(kv: &dyn KvStore, keys: &RestKeys) -> ApiResult<Db> {
        let (kvs, _) = kv.list(keys.prefix()).await?;
        let mut db = Db::default();
        for e in kvs {
            let rest = &e.key[keys.prefix().len()..];
            if rest == "seq" {
                let n = String::from_utf8_lossy(&e.value)
                    .trim()
                    .parse()
                    .unwrap_or(0);
                db.seq = (n, e.mod_revision);
            } else if rest.starts_with("tenants/") {
                if let Ok(t) = serde_json::from_slice::<TenantRec>(&e.value) {
                    db.tenants.insert(t.id, t.name);
                }
            } else if rest.starts_with("objects/") {
                match serde_json::from_slice::<Record>(&e.value) {
                    Ok(r) => {
                        db.recs.insert(r.id, (r, e.mod_revision));
                    }
                    Err(err) => {
                        tracing::warn!(key = %e.key, error = %err, "undecodable REST record")
                    }
                }
            }
        }
        Ok(db)
    }

    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Record> {
        self.recs
            .values()
            .map(|(r, _)| r)
            .filter(move |r| r.kind() == kind)
    }

    pub fn get(&self, kind: Kind, id: u64) -> Option<&Record> {
        self.recs
            .get(&id)
            .map(|(r, _)| r)
            .filter(|r| r.kind() == kind)
    }

    pub fn rev(&self, id: u64) -> i64 {
        self.recs.get(&id).map(|(_, r)| *r).unwrap_or(0)
    }

    pub fn find(&self, kind: Kind, tenant: &str, name: &str) -> Option<&Record> {
        self.of(kind).find(|r| r.tenant == tenant && r.name == name)
    }

    pub fn tenant_id(&self, name: &str) -> u64 {
        self.tenants
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| *id)
            .unwrap_or(0)
    }

    pub fn vpc_name(&self, id: u64) -> String {
        if id == SYSTEM_VPC_ID {
            return SYSTEM_VPC_NAME.into();
        }
        self.get(Kind::Vpc, id)
            .map(|r| r.name.clone())
            .unwrap_or_default()
    }

    /// The StackFabric VPC (tenant, name) of a Netris VPC: created with its first allocation.
    pub fn sf_vpc(&self, vpc: u64) -> Option<(String, String)> {
        self.of(Kind::Allocation)
            .filter(|a| a.vpc == vpc)
            .find_map(|a| match &a.sf {
                Some(SfRef::Vpc { tenant, name }) => Some((tenant.clone(), name.clone())),
                _ => None,
            })
    }
}

/// One etcd transaction under construction.
pub struct Txn<'a> {
    keys: &'a RestKeys,
    sf: &'a sf_store::keys::Keys,
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
    seq: Option<u64>,
    seq_base: (u64, i64),
}

fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put {
        key,
        value,
        lease: 0,
    }
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

impl<'a> Txn<'a> {
    pub fn new(keys: &'a RestKeys, sf: &'a sf_store::keys::Keys, db: &Db) -> Self {
        Txn {
            keys,
            sf,
            compares: vec![],
            ops: vec![],
            seq: None,
            seq_base: db.seq,
        }
    }

    /// A fresh Netris id (claimed by this transaction).
    pub fn alloc_id(&mut self) -> u64 {
        // Id 1 is the System VPC and the site.
        let next = self.seq.unwrap_or(self.seq_base.0.max(1)) + 1;
        self.seq = Some(next);
        next
    }

    pub fn put_record(&mut self, rec: &Record, prev_rev: Option<i64>) {
        let k = self.keys.object(rec.kind(), rec.id);
        self.compares.push(match prev_rev {
            None => Compare::Absent(k.clone()),
            Some(r) => Compare::ModRevision(k.clone(), r),
        });
        self.ops.push(put(k, enc(rec)));
    }

    pub fn delete_record(&mut self, rec: &Record, rev: i64) {
        let k = self.keys.object(rec.kind(), rec.id);
        self.compares.push(Compare::ModRevision(k.clone(), rev));
        self.ops.push(Op::Delete { key: k });
    }

    pub fn put_tenant(&mut self, id: u64, name: &str) {
        let k = self.keys.tenant(id);
        self.compares.push(Compare::Absent(k.clone()));
        self.ops.push(put(
            k,
            enc(&TenantRec {
                id,
                name: name.into(),
            }),
        ));
    }

    pub fn create_sf_tenant(&mut self, t: &Tenant) {
        let k = self.sf.tenant(&t.name);
        self.compares.push(Compare::Absent(k.clone()));
        self.ops.push(put(k, enc(t)));
    }

    /// Creates (or, with `replace`, overwrites an existing object with the same key of) a
    /// StackFabric object, with sf-store's compares. A VPC must carry its allocated id.
    pub fn add_sf(&mut self, obj: &SfObj, replace: bool) {
        let k = &self.sf;
        let cmp = |key: String| {
            if replace {
                Compare::Present(key)
            } else {
                Compare::Absent(key)
            }
        };
        match obj {
            SfObj::Vpc(v) => {
                let key = k.vpc(&v.tenant, &v.name);
                self.compares.extend([
                    Compare::Absent(key.clone()),
                    Compare::Absent(k.vpc_id(&v.site, v.id)),
                    Compare::Present(k.tenant(&v.tenant)),
                ]);
                self.ops.push(put(key, enc(v)));
                self.ops.push(put(
                    k.vpc_id(&v.site, v.id),
                    format!("{}/{}", v.tenant, v.name).into_bytes(),
                ));
            }
            SfObj::Pool(p) => {
                let key = k.pool(&p.name);
                self.compares.push(Compare::Absent(key.clone()));
                self.ops.push(put(key, enc(p)));
            }
            SfObj::Network(n) => {
                let key = k.network(&n.tenant, &n.vpc, &n.name);
                self.compares.extend([
                    Compare::Absent(key.clone()),
                    Compare::Absent(k.vni(n.vni)),
                    Compare::Present(k.vpc(&n.tenant, &n.vpc)),
                ]);
                self.ops.push(put(key, enc(n)));
                self.ops.push(put(
                    k.vni(n.vni),
                    format!("{}/{}/{}", n.tenant, n.vpc, n.name).into_bytes(),
                ));
            }
            SfObj::Nat(r) => {
                let key = k.nat(&r.tenant, &r.vpc, &r.name);
                let c = cmp(key.clone());
                self.compares
                    .extend([c, Compare::Present(k.vpc(&r.tenant, &r.vpc))]);
                self.ops.push(put(key, enc(r)));
            }
            SfObj::Lb(l) => {
                let key = k.lb(&l.tenant, &l.vpc, &l.name);
                let c = cmp(key.clone());
                self.compares
                    .extend([c, Compare::Present(k.vpc(&l.tenant, &l.vpc))]);
                self.ops.push(put(key, enc(l)));
            }
            SfObj::Route(r) => {
                let key = k.route(&r.tenant, &r.vpc, &r.name);
                let c = cmp(key.clone());
                self.compares
                    .extend([c, Compare::Present(k.vpc(&r.tenant, &r.vpc))]);
                self.ops.push(put(key, enc(r)));
            }
        }
    }

    /// Creates or (with `replace`) overwrites an ACL list owned by the REST layer.
    pub fn put_acl(&mut self, l: &AclList, replace: bool) {
        let key = self.sf.acl(&l.tenant, &l.vpc, &l.name);
        self.compares.extend([
            if replace {
                Compare::Present(key.clone())
            } else {
                Compare::Absent(key.clone())
            },
            Compare::Present(self.sf.vpc(&l.tenant, &l.vpc)),
        ]);
        self.ops.push(put(key, enc(l)));
    }

    pub fn delete_acl(&mut self, l: &AclList) {
        let key = self.sf.acl(&l.tenant, &l.vpc, &l.name);
        self.compares.push(Compare::Present(key.clone()));
        self.ops.push(Op::Delete { key });
    }

    /// Deletes a StackFabric object and its allocation keys (VNI, VPC id). Adopted pools stay.
    pub fn remove_sf(&mut self, intent: &Intent, r: &SfRef) {
        let k = &self.sf;
        let keys: Vec<String> = match r {
            SfRef::Vpc { tenant, name } => {
                let mut v = vec![k.vpc(tenant, name)];
                if let Some(vpc) = intent.vpcs.get(&(tenant.clone(), name.clone())) {
                    if vpc.id != 0 {
                        v.push(k.vpc_id(&vpc.site, vpc.id));
                    }
                }
                v
            }
            SfRef::Pool { adopted: true, .. } => return,
            SfRef::Pool { name, .. } => vec![k.pool(name)],
            SfRef::Network { tenant, vpc, name } => {
                let mut v = vec![k.network(tenant, vpc, name)];
                if let Some(n) = intent.networks.get(&k3(tenant, vpc, name)) {
                    v.push(k.vni(n.vni));
                }
                v
            }
            SfRef::Nat { tenant, vpc, name } => vec![k.nat(tenant, vpc, name)],
            SfRef::Lb { tenant, vpc, name } => vec![k.lb(tenant, vpc, name)],
            SfRef::Route { tenant, vpc, name } => vec![k.route(tenant, vpc, name)],
        };
        self.compares.push(Compare::Present(keys[0].clone()));
        self.ops
            .extend(keys.into_iter().map(|key| Op::Delete { key }));
    }

    /// The compares and operations, with the id counter's update if ids were handed out.
    pub fn finish(mut self) -> (Vec<Compare>, Vec<Op>) {
        if let Some(last) = self.seq {
            let k = self.keys.seq();
            self.compares.push(if self.seq_base.1 == 0 {
                Compare::Absent(k.clone())
            } else {
                Compare::ModRevision(k.clone(), self.seq_base.1)
            });
            self.ops.push(put(k, last.to_string().into_bytes()));
        }
        (self.compares, self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record {
            id: 12,
            name: "D1-A2-Z1-V5-SNAT".into(),
            tenant: "Admin".into(),
            vpc: 4,
            spec: Spec::Vpc,
            sf: Some(SfRef::Pool {
                name: "public".into(),
                adopted: true,
            }),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&j).unwrap(), r);
        let keys = RestKeys::new("/sf/");
        assert_eq!(keys.object(Kind::L4lb, 7), "/sf/rest/objects/l4lb/7");
        assert_eq!(keys.seq(), "/sf/rest/seq");
        // Never parsed as intent.
        assert_eq!(
            sf_store::keys::Keys::new("/sf").parse(&keys.object(Kind::Nat, 3)),
            None
        );
    }

    #[test]
    fn ids_are_claimed_with_the_counter() {
        let keys = RestKeys::new("/sf");
        let sfk = sf_store::keys::Keys::new("/sf");
        let db = Db::default();
        let mut t = Txn::new(&keys, &sfk, &db);
        assert_eq!(t.alloc_id(), 2);
        assert_eq!(t.alloc_id(), 3);
        let (c, o) = t.finish();
        assert_eq!(c, vec![Compare::Absent("/sf/rest/seq".into())]);
        assert_eq!(
            o,
            vec![Op::Put {
                key: "/sf/rest/seq".into(),
                value: b"3".to_vec(),
                lease: 0
            }]
        );
    }
}
