//! REST metadata in etcd, and the one-transaction writes that change it together with the
//! StackFabric objects it maps to.
//!
//! Layout (under the coordinator's etcd root; sf-store's parser ignores these keys and hands
//! them over raw, and the coordinator's index keeps them decoded as a [`Db`] beside its view,
//! from the same load and watch: `Fabric::rest_db`):
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
//! built by sf-store's write surface ([`sf_store::write`], the one the gRPC API's writes use:
//! object absent, parent present, VNI and VPC id claims absent), so a rejected or raced write
//! changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sf_core::event::{Object, ObjectRef, VpcChildRef, VpcRef};
use sf_core::model::{
    AclList, Intent, LoadBalancer, NatRule, Network, Pool, StaticRoute, Tenant, Vpc,
};
use sf_core::validate::{self, ValidationError};
use sf_store::write::WriteSet;
use sf_store::{Compare, EventKind, KeyValue, Op, WatchEvent};

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

impl SfRef {
    /// The StackFabric object's reference (an adopted pool's too).
    pub fn object_ref(&self) -> ObjectRef {
        match self.clone() {
            SfRef::Vpc { tenant, name } => ObjectRef::Vpc(VpcRef::new(tenant, name)),
            SfRef::Pool { name, .. } => ObjectRef::Pool(name),
            SfRef::Network { tenant, vpc, name } => {
                ObjectRef::Network(VpcChildRef::new(tenant, vpc, name))
            }
            SfRef::Nat { tenant, vpc, name } => ObjectRef::Nat(VpcChildRef::new(tenant, vpc, name)),
            SfRef::Lb { tenant, vpc, name } => {
                ObjectRef::LoadBalancer(VpcChildRef::new(tenant, vpc, name))
            }
            SfRef::Route { tenant, vpc, name } => {
                ObjectRef::Route(VpcChildRef::new(tenant, vpc, name))
            }
        }
    }
}

impl SfObj {
    /// The object as sf-store's write surface takes it.
    pub fn object(&self) -> Object {
        match self.clone() {
            SfObj::Vpc(v) => Object::Vpc(v),
            SfObj::Pool(p) => Object::Pool(p),
            SfObj::Network(n) => Object::Network(n),
            SfObj::Nat(r) => Object::Nat(r),
            SfObj::Lb(l) => Object::LoadBalancer(l),
            SfObj::Route(r) => Object::Route(r),
        }
    }

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

fn k3(t: &str, v: &str, n: &str) -> VpcChildRef {
    VpcChildRef::new(t, v, n)
}

/// Whether the referenced StackFabric object exists.
pub fn sf_exists(intent: &Intent, r: &SfRef) -> bool {
    match r {
        SfRef::Vpc { tenant, name } => intent.vpcs.contains_key(&VpcRef::new(tenant, name)),
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
            i.vpcs.remove(&VpcRef::new(tenant, name));
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

/// Everything under `{root}/rest/`, as of one revision (the index's).
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
    /// The metadata of the keys `kvs` (any keys; those outside `{root}/rest/` are skipped).
    pub fn from_kvs(keys: &RestKeys, kvs: impl IntoIterator<Item = KeyValue>) -> Db {
        let mut db = Db::default();
        for kv in kvs {
            db.apply(
                keys,
                &WatchEvent {
                    kind: EventKind::Put,
                    kv,
                },
            );
        }
        db
    }

    /// Applies one watch event of a key under `{root}/rest/` (others are ignored); returns
    /// whether it was one. An undecodable record is logged and skipped.
    pub fn apply(&mut self, keys: &RestKeys, ev: &WatchEvent) -> bool {
        let Some(rest) = ev.kv.key.strip_prefix(keys.prefix()) else {
            return false;
        };
        let put = ev.kind == EventKind::Put;
        // The id a tenant or record key ends with.
        let key_id = |sub: &str| sub.rsplit('/').next().and_then(|i| i.parse::<u64>().ok());
        if rest == "seq" {
            self.seq = if put {
                let n = String::from_utf8_lossy(&ev.kv.value)
                    .trim()
                    .parse()
                    .unwrap_or(0);
                (n, ev.kv.mod_revision)
            } else {
                (0, 0)
            };
        } else if let Some(sub) = rest.strip_prefix("tenants/") {
            if !put {
                if let Some(id) = key_id(sub) {
                    self.tenants.remove(&id);
                }
            } else if let Ok(t) = serde_json::from_slice::<TenantRec>(&ev.kv.value) {
                self.tenants.insert(t.id, t.name);
            }
        } else if let Some(sub) = rest.strip_prefix("objects/") {
            if !put {
                if let Some(id) = key_id(sub) {
                    self.recs.remove(&id);
                }
            } else {
                match serde_json::from_slice::<Record>(&ev.kv.value) {
                    Ok(r) => {
                        self.recs.insert(r.id, (r, ev.kv.mod_revision));
                    }
                    Err(err) => {
                        tracing::warn!(key = %ev.kv.key, error = %err, "undecodable REST record")
                    }
                }
            }
        }
        true
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

/// One etcd transaction under construction: the REST layer's own records, tenants and id
/// counter, and StackFabric objects through sf-store's write surface.
pub struct Txn<'a> {
    keys: &'a RestKeys,
    sf: &'a sf_store::keys::Keys,
    set: WriteSet,
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
            set: WriteSet::new(),
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
        self.set.compares.push(match prev_rev {
            None => Compare::Absent(k.clone()),
            Some(r) => Compare::ModRevision(k.clone(), r),
        });
        self.set.ops.push(put(k, enc(rec)));
    }

    pub fn delete_record(&mut self, rec: &Record, rev: i64) {
        let k = self.keys.object(rec.kind(), rec.id);
        self.set.compares.push(Compare::ModRevision(k.clone(), rev));
        self.set.ops.push(Op::Delete { key: k });
    }

    pub fn put_tenant(&mut self, id: u64, name: &str) {
        let k = self.keys.tenant(id);
        self.set.compares.push(Compare::Absent(k.clone()));
        self.set.ops.push(put(
            k,
            enc(&TenantRec {
                id,
                name: name.into(),
            }),
        ));
    }

    pub fn create_sf_tenant(&mut self, t: &Tenant) {
        self.set.create(self.sf, &Object::Tenant(t.clone()));
    }

    /// Creates (or, with `replace`, overwrites an existing object with the same key of) a
    /// StackFabric object. A VPC must carry its allocated id, a network its VNI (both are
    /// claimed by a create; a replace keeps them).
    pub fn add_sf(&mut self, obj: &SfObj, replace: bool) {
        let obj = obj.object();
        if replace {
            self.set.replace(self.sf, &obj);
        } else {
            self.set.create(self.sf, &obj);
        }
    }

    /// Creates or (with `replace`) overwrites an ACL list owned by the REST layer.
    pub fn put_acl(&mut self, l: &AclList, replace: bool) {
        let obj = Object::Acl(l.clone());
        if replace {
            self.set.replace(self.sf, &obj);
        } else {
            self.set.create(self.sf, &obj);
        }
    }

    pub fn delete_acl(&mut self, l: &AclList) {
        self.set.delete_object(self.sf, &Object::Acl(l.clone()));
    }

    /// Deletes a StackFabric object and its allocation keys (VNI, VPC id). Adopted pools stay.
    pub fn remove_sf(&mut self, intent: &Intent, r: &SfRef) {
        if matches!(r, SfRef::Pool { adopted: true, .. }) {
            return;
        }
        self.set.delete(self.sf, &r.object_ref(), intent);
    }

    /// The compares and operations, with the id counter's update if ids were handed out.
    pub fn finish(mut self) -> (Vec<Compare>, Vec<Op>) {
        if let Some(last) = self.seq {
            let k = self.keys.seq();
            self.set.compares.push(if self.seq_base.1 == 0 {
                Compare::Absent(k.clone())
            } else {
                Compare::ModRevision(k.clone(), self.seq_base.1)
            });
            self.set.ops.push(put(k, last.to_string().into_bytes()));
        }
        self.set.into_parts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_store::KvStore;

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

    /// A store that records every transaction it is given (and applies it to a `MemStore`).
    #[derive(Default)]
    struct Recording {
        inner: sf_store::mem::MemStore,
        txns: std::sync::Mutex<Vec<(Vec<Compare>, Vec<Op>)>>,
    }

    #[async_trait::async_trait]
    impl KvStore for Recording {
        async fn get(&self, key: &str) -> sf_store::Result<Option<sf_store::KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> sf_store::Result<(Vec<sf_store::KeyValue>, i64)> {
            self.inner.list(prefix).await
        }
        async fn txn(
            &self,
            compares: Vec<Compare>,
            ops: Vec<Op>,
        ) -> sf_store::Result<sf_store::TxnOutcome> {
            self.txns
                .lock()
                .unwrap()
                .push((compares.clone(), ops.clone()));
            self.inner.txn(compares, ops).await
        }
        async fn watch(&self, prefix: &str, rev: i64) -> sf_store::Result<sf_store::WatchStream> {
            self.inner.watch(prefix, rev).await
        }
        async fn lease_grant(&self, ttl: i64) -> sf_store::Result<i64> {
            self.inner.lease_grant(ttl).await
        }
        async fn lease_keep_alive(&self, lease: i64) -> sf_store::Result<i64> {
            self.inner.lease_keep_alive(lease).await
        }
        async fn lease_revoke(&self, lease: i64) -> sf_store::Result<()> {
            self.inner.lease_revoke(lease).await
        }
    }

    /// The one write road: a network (and a VPC) created and deleted through the gRPC API's
    /// `IntentStore` and through a REST transaction are guarded by the same compares and make
    /// the same changes (REST only adds its own record and counter; sf-store adds the intent
    /// version every coordinator write advances).
    #[tokio::test]
    async fn grpc_and_rest_writes_share_their_guards() {
        use sf_store::intent::IntentStore;
        let rec = std::sync::Arc::new(Recording::default());
        let sfk = sf_store::keys::Keys::new("/sf");
        let store = IntentStore::new(rec.clone(), sfk.clone());
        let vpc = Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "Admin".into(),
            name: "v".into(),
            cidr: "10.20.0.0/16".parse().unwrap(),
            site: String::new(),
            id: 3,
        };
        let net = Network {
            ipv6_prefix: None,
            tenant: "Admin".into(),
            vpc: "v".into(),
            name: "tier1".into(),
            cidr: "10.20.1.0/24".parse().unwrap(),
            vni: 1_000_007,
            gateway: "10.20.1.1".parse().unwrap(),
        };
        let mut intent = Intent::default();
        intent.vpcs.insert(vpc.key(), vpc.clone());
        intent.networks.insert(net.key(), net.clone());
        // gRPC: the store's writes (they fail on the empty store; what they asked is recorded).
        let _ = store.create_network(&net).await;
        let _ = store.delete_network(&net).await;
        let _ = store.delete_vpc(&vpc).await;
        let grpc: Vec<(Vec<Compare>, Vec<Op>)> = rec
            .txns
            .lock()
            .unwrap()
            .iter()
            .map(|(c, o)| {
                // Every coordinator write also advances the intent version.
                assert_eq!(o.last().map(op_key), Some(sfk.intent_seq()));
                (c.clone(), o[..o.len() - 1].to_vec())
            })
            .collect();
        // REST: the same objects through a REST transaction, without its records.
        let keys = RestKeys::new("/sf");
        let rest = |f: &dyn Fn(&mut Txn)| {
            let mut t = Txn::new(&keys, &sfk, &Db::default());
            f(&mut t);
            t.finish()
        };
        let net_ref = SfObj::Network(net.clone()).sf_ref();
        let vpc_ref = SfObj::Vpc(vpc.clone()).sf_ref();
        assert_eq!(
            grpc,
            vec![
                rest(&|t| t.add_sf(&SfObj::Network(net.clone()), false)),
                rest(&|t| t.remove_sf(&intent, &net_ref)),
                rest(&|t| t.remove_sf(&intent, &vpc_ref)),
            ]
        );
        assert_eq!(
            grpc[0].0,
            vec![
                Compare::Absent(sfk.network("Admin", "v", "tier1")),
                Compare::Absent(sfk.vni(1_000_007)),
                Compare::Present(sfk.vpc("Admin", "v")),
            ]
        );
        assert_eq!(grpc[2].1.len(), 2, "a VPC's delete releases its id");
    }

    fn op_key(op: &Op) -> String {
        match op {
            Op::Put { key, .. } | Op::Delete { key } => key.clone(),
        }
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
