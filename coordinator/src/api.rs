//! The northbound FabricApi: validated CRUD on intent and inventory, and fleet status. Every
//! write is validated against the current index under the write lock, committed as one guarded
//! etcd transaction, and returns only once the coordinator's own index reflects it, so a
//! following read or `sfctl status` already sees it.

use std::sync::Arc;

use sf_core::event::{PortRef, VpcChildRef, VpcRef};
use sf_core::validate::{self, ValidationError};
use sf_proto::v1 as pb;
use sf_proto::v1::fabric_api_server::FabricApi;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::convert::*;
use crate::fabric::Fabric;
use crate::identity::Tokens;

pub struct Api {
    pub fabric: Arc<Fabric>,
    pub tokens: Tokens,
}

type R<T> = Result<Response<T>, Status>;

impl Api {
    fn auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.tokens.check(req).map(|_| ())
    }

    /// Runs `check` against the current intent; a rejection becomes the RPC status.
    fn validate(
        &self,
        check: impl FnOnce(&sf_core::Intent) -> Result<(), ValidationError>,
    ) -> Result<(), Status> {
        self.fabric
            .with_view(|v, _| check(&v.intent))
            .map_err(validation_status)
    }

    /// The one shape of a plain write: under the write lock, `check` the request against the
    /// index, then run `commit` (the store's guarded transaction: a future, so nothing is
    /// sent before validation passed) and answer once the index reflects it. A dry run stops
    /// after the check: `commit` is dropped unpolled, so nothing reaches etcd.
    async fn write(
        &self,
        what: &str,
        dry: DryRun,
        check: impl FnOnce(&sf_core::Intent) -> Result<(), ValidationError>,
        commit: impl std::future::Future<Output = Result<i64, sf_store::intent::WriteError>>,
    ) -> R<pb::WriteResult> {
        let _g = self.fabric.write_guard().await;
        self.validate(check)?;
        if dry.0 {
            return Ok(self.dry_run_answer(what));
        }
        let rev = commit.await.map_err(write_status)?;
        self.committed(what, rev).await
    }

    /// The answer to a dry run that passed validation: the revision it was validated
    /// against, and `dry_run` set.
    fn dry_run_answer(&self, what: &str) -> Response<pb::WriteResult> {
        let revision = self.fabric.with_view(|_, rev| rev) as u64;
        info!(revision, "dry run: {what} (nothing written)");
        Response::new(pb::WriteResult {
            revision,
            dry_run: true,
        })
    }

    async fn committed(&self, what: &str, rev: i64) -> R<pb::WriteResult> {
        self.fabric.metrics.api_writes.inc();
        self.fabric.wait_for_revision(rev).await;
        info!(revision = rev, "{what}");
        Ok(Response::new(pb::WriteResult {
            revision: rev as u64,
            dry_run: false,
        }))
    }
}

/// Whether a write request asked to be validated only (`sf-dry-run: true` metadata; see
/// `stackfabric.proto`). Metadata rather than a field, so that every write — whose request
/// message is the object itself, or an `ObjectRef` — takes it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DryRun(pub bool);

/// The metadata key of a dry run.
pub const DRY_RUN_HEADER: &str = "sf-dry-run";

impl DryRun {
    pub fn of<T>(req: &Request<T>) -> Self {
        DryRun(
            req.metadata()
                .get(DRY_RUN_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| matches!(v.trim(), "true" | "1" | "yes")),
        )
    }
}

impl Api {
    /// A network create's dry run: validated as the real create would be, the VNI (when the
    /// request left it to the pool) being the first free one at this revision.
    fn dry_run_network(&self, mut n: sf_core::Network) -> R<pb::NetworkCreated> {
        self.validate(|i| {
            if n.vni == 0 {
                let used = i.used_vnis();
                n.vni = sf_core::VNI_POOL
                    .clone()
                    .find(|v| !used.contains(v))
                    .unwrap_or(0);
            }
            validate::validate_network(i, &n)
        })?;
        let answer = self.dry_run_answer("network created").into_inner();
        Ok(Response::new(pb::NetworkCreated {
            network: Some(network_out(&n)),
            revision: answer.revision,
            dry_run: true,
        }))
    }

    async fn set_drained(&self, req: Request<pb::ObjectRef>, drained: bool) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let _g = self.fabric.write_guard().await;
        let role = self
            .fabric
            .with_view(|v, _| v.intent.nodes.get(&r.name).map(|n| n.role))
            .ok_or_else(|| not_found("node.name", format!("node {:?}", r.name)))?;
        if role != sf_core::NodeRole::Gateway {
            return Err(Status::invalid_argument(format!(
                "invalid node.name: {:?} is a {}, not a gateway",
                r.name,
                role.as_str()
            )));
        }
        if dry.0 {
            return Ok(self.dry_run_answer("gateway drain"));
        }
        let rev = self
            .fabric
            .store()
            .set_drained(&r.name, drained)
            .await
            .map_err(write_status)?;
        // Return once placement reflects the drain, so `sfctl gateway drain` means "moved".
        self.fabric.wait_for_revision(rev).await;
        for _ in 0..50 {
            let settled = self.fabric.with_view(|v, _| {
                v.intent.placements.values().all(|p| {
                    !drained
                        || (p.primary.as_deref() != Some(r.name.as_str())
                            && p.standby.as_deref() != Some(r.name.as_str()))
                })
            });
            if settled {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let what = if drained {
            "gateway drained"
        } else {
            "gateway undrained"
        };
        self.committed(what, rev).await
    }
}

fn not_found(field: &str, what: String) -> Status {
    Status::not_found(format!("invalid {field}: {what} does not exist"))
}

#[tonic::async_trait]
impl FabricApi for Api {
    async fn create_tenant(&self, req: Request<pb::Tenant>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let t = tenant_in(req.into_inner());
        let store = self.fabric.store();
        self.write(
            "tenant created",
            dry,
            |i| validate::validate_tenant(i, &t),
            store.create_tenant(&t),
        )
        .await
    }

    async fn update_tenant(&self, req: Request<pb::Tenant>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let t = tenant_in(req.into_inner());
        let store = self.fabric.store();
        self.write(
            "tenant updated",
            dry,
            |i| validate::validate_tenant_update(i, &t),
            store.update_tenant(&t),
        )
        .await
    }

    async fn list_tenants(&self, req: Request<pb::Empty>) -> R<pb::TenantList> {
        self.auth(&req)?;
        let items = self
            .fabric
            .with_view(|v, _| v.intent.tenants.values().map(tenant_out).collect());
        Ok(Response::new(pb::TenantList { items }))
    }

    async fn get_tenant(&self, req: Request<pb::ObjectRef>) -> R<pb::Tenant> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.fabric
            .with_view(|v, _| v.intent.tenants.get(&r.name).map(tenant_out))
            .map(Response::new)
            .ok_or_else(|| not_found("tenant.name", format!("tenant {:?}", r.name)))
    }

    async fn delete_tenant(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let store = self.fabric.store();
        self.write(
            "tenant deleted",
            dry,
            |i| validate::check_delete_tenant(i, &r.name),
            store.delete_tenant(&r.name),
        )
        .await
    }

    async fn create_vpc(&self, req: Request<pb::Vpc>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let v = vpc_in(req.into_inner())?;
        let _g = self.fabric.write_guard().await;
        self.validate(|i| validate::validate_vpc(i, &v))?;
        if dry.0 {
            return Ok(self.dry_run_answer("vpc created"));
        }
        // Ids the index knows in the site: allocation need not list every key in etcd.
        let known = self
            .fabric
            .with_view(|view, _| sf_store::intent::IntentStore::known_vpc_ids(view, &v.site));
        let (id, rev) = self
            .fabric
            .store()
            .create_vpc_hinted(&v, sf_core::VPC_ID_POOL, Some(&known))
            .await
            .map_err(write_status)?;
        info!(vpc_id = id, "vpc id allocated");
        self.committed("vpc created", rev).await
    }

    async fn list_vpcs(&self, req: Request<pb::ListRequest>) -> R<pb::VpcList> {
        self.auth(&req)?;
        let f = req.into_inner();
        let items = self.fabric.with_view(|v, _| {
            v.intent
                .vpcs
                .values()
                .filter(|x| f.tenant.is_empty() || x.tenant == f.tenant)
                .map(|x| vpc_out(x, v.intent.placements.get(&x.key())))
                .collect()
        });
        Ok(Response::new(pb::VpcList { items }))
    }

    async fn get_vpc(&self, req: Request<pb::ObjectRef>) -> R<pb::Vpc> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.fabric
            .with_view(|v, _| {
                let k = VpcRef::new(&r.tenant, &r.name);
                v.intent
                    .vpcs
                    .get(&k)
                    .map(|x| vpc_out(x, v.intent.placements.get(&k)))
            })
            .map(Response::new)
            .ok_or_else(|| {
                not_found(
                    "vpc.name",
                    format!("VPC {:?} in tenant {:?}", r.name, r.tenant),
                )
            })
    }

    async fn delete_vpc(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let _g = self.fabric.write_guard().await;
        self.validate(|i| validate::check_delete_vpc(i, &r.tenant, &r.name))?;
        let vpc = self
            .fabric
            .with_view(|v, _| v.intent.vpcs.get(&VpcRef::new(&r.tenant, &r.name)).cloned())
            .ok_or_else(|| not_found("vpc.name", format!("VPC {:?}", r.name)))?;
        if dry.0 {
            return Ok(self.dry_run_answer("vpc deleted"));
        }
        let rev = self
            .fabric
            .store()
            .delete_vpc(&vpc)
            .await
            .map_err(write_status)?;
        self.committed("vpc deleted", rev).await
    }

    async fn create_network(&self, req: Request<pb::Network>) -> R<pb::NetworkCreated> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let mut n = network_in(req.into_inner())?;
        let _g = self.fabric.write_guard().await;
        if dry.0 {
            return self.dry_run_network(n);
        }
        let rev = if n.vni == 0 {
            // Validate everything but the VNI with a free placeholder, then let the store
            // allocate atomically (a racing allocator can never hand out the same VNI).
            // The VNIs in use, from the index kept beside the view: the validation probe and
            // the allocation both start from it, in O(log n) whatever the fabric's size.
            let known = self
                .fabric
                .with_view(|view, _| {
                    let known = view.alloc.vnis().clone();
                    let mut probe = n.clone();
                    probe.vni = known
                        .lowest_free(&sf_core::VNI_POOL, &Default::default())
                        .unwrap_or(0);
                    validate::validate_network_with(&view.intent, &probe, |vni| {
                        view.alloc.network_by_vni(&view.intent, vni)
                    })
                    .map(|()| known)
                })
                .map_err(validation_status)?;
            let (vni, rev) = self
                .fabric
                .store()
                .create_network_hinted(&n, sf_core::VNI_POOL, Some(&known))
                .await
                .map_err(write_status)?;
            n.vni = vni;
            rev
        } else {
            self.fabric
                .with_view(|view, _| {
                    validate::validate_network_with(&view.intent, &n, |vni| {
                        view.alloc.network_by_vni(&view.intent, vni)
                    })
                })
                .map_err(validation_status)?;
            self.fabric
                .store()
                .create_network(&n)
                .await
                .map_err(write_status)?
        };
        self.fabric.wait_for_revision(rev).await;
        info!(revision = rev, vni = n.vni, "network created");
        Ok(Response::new(pb::NetworkCreated {
            network: Some(network_out(&n)),
            revision: rev as u64,
            dry_run: false,
        }))
    }

    async fn list_networks(&self, req: Request<pb::ListRequest>) -> R<pb::NetworkList> {
        self.auth(&req)?;
        let f = req.into_inner();
        let items = self.fabric.with_view(|v, _| {
            v.intent
                .networks
                .values()
                .filter(|x| f.tenant.is_empty() || x.tenant == f.tenant)
                .filter(|x| f.vpc.is_empty() || x.vpc == f.vpc)
                .map(network_out)
                .collect()
        });
        Ok(Response::new(pb::NetworkList { items }))
    }

    async fn get_network(&self, req: Request<pb::ObjectRef>) -> R<pb::Network> {
        self.auth(&req)?;
        let r = req.into_inner();
        let key = VpcChildRef::new(&r.tenant, &r.vpc, &r.name);
        self.fabric
            .with_view(|v, _| v.intent.networks.get(&key).map(network_out))
            .map(Response::new)
            .ok_or_else(|| {
                not_found(
                    "network.name",
                    format!(
                        "network {:?} in VPC {:?} of tenant {:?}",
                        r.name, r.vpc, r.tenant
                    ),
                )
            })
    }

    async fn delete_network(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let _g = self.fabric.write_guard().await;
        self.validate(|i| validate::check_delete_network(i, &r.tenant, &r.vpc, &r.name))?;
        let key = VpcChildRef::new(&r.tenant, &r.vpc, &r.name);
        let net = self
            .fabric
            .with_view(|v, _| v.intent.networks.get(&key).cloned())
            .ok_or_else(|| not_found("network.name", format!("network {:?}", r.name)))?;
        if dry.0 {
            return Ok(self.dry_run_answer("network deleted"));
        }
        let rev = self
            .fabric
            .store()
            .delete_network(&net)
            .await
            .map_err(write_status)?;
        self.committed("network deleted", rev).await
    }

    async fn create_port_binding(&self, req: Request<pb::PortBinding>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let p = port_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "port bound",
            dry,
            |i| validate::validate_port(i, &p),
            store.create_port(&p),
        )
        .await
    }

    async fn list_port_bindings(&self, req: Request<pb::ListRequest>) -> R<pb::PortBindingList> {
        self.auth(&req)?;
        let f = req.into_inner();
        let items = self.fabric.with_view(|v, _| {
            v.intent
                .ports
                .values()
                .filter(|x| f.tenant.is_empty() || x.tenant == f.tenant)
                .filter(|x| f.vpc.is_empty() || x.vpc == f.vpc)
                .map(port_out)
                .collect()
        });
        Ok(Response::new(pb::PortBindingList { items }))
    }

    async fn get_port_binding(&self, req: Request<pb::ObjectRef>) -> R<pb::PortBinding> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.fabric
            .with_view(|v, _| {
                v.intent
                    .ports
                    .get(&PortRef::new(&r.tenant, &r.name))
                    .map(port_out)
            })
            .map(Response::new)
            .ok_or_else(|| {
                not_found(
                    "port.name",
                    format!("port {:?} in tenant {:?}", r.name, r.tenant),
                )
            })
    }

    async fn delete_port_binding(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let store = self.fabric.store();
        self.write(
            "port unbound",
            dry,
            |i| validate::check_delete_port(i, &r.tenant, &r.name),
            store.delete_port(&r.tenant, &r.name),
        )
        .await
    }

    async fn create_node(&self, req: Request<pb::Node>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let n = node_in(req.into_inner())?;
        // A coordinator replica's name is its etcd user too (as `root` is, in sf-core).
        let replica = self.fabric.replica_name() == n.name
            || self.fabric.with_view(|v, _| v.replicas.contains(&n.name));
        if replica {
            return Err(invalid(
                "node.name",
                format!(
                    "{:?} is a coordinator replica's name (its etcd user)",
                    n.name
                ),
            ));
        }
        let store = self.fabric.store();
        self.write(
            "node added",
            dry,
            |i| validate::validate_node(i, &n),
            store.create_node(&n),
        )
        .await
    }

    async fn list_nodes(&self, req: Request<pb::Empty>) -> R<pb::NodeList> {
        self.auth(&req)?;
        let items = self
            .fabric
            .with_view(|v, _| v.intent.nodes.values().map(node_out).collect());
        Ok(Response::new(pb::NodeList { items }))
    }

    async fn get_node(&self, req: Request<pb::ObjectRef>) -> R<pb::Node> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.fabric
            .with_view(|v, _| v.intent.nodes.get(&r.name).map(node_out))
            .map(Response::new)
            .ok_or_else(|| not_found("node.name", format!("node {:?}", r.name)))
    }

    async fn delete_node(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let store = self.fabric.store();
        self.write(
            "node removed",
            dry,
            |i| validate::check_delete_node(i, &r.name),
            store.delete_node(&r.name),
        )
        .await
    }

    async fn create_pool(&self, req: Request<pb::Pool>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let p = pool_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "pool created",
            dry,
            |i| validate::validate_pool(i, &p),
            store.create_pool(&p),
        )
        .await
    }

    async fn list_pools(&self, req: Request<pb::Empty>) -> R<pb::PoolList> {
        self.auth(&req)?;
        let items = self
            .fabric
            .with_view(|v, _| v.intent.pools.values().map(pool_out).collect());
        Ok(Response::new(pb::PoolList { items }))
    }

    async fn get_pool(&self, req: Request<pb::ObjectRef>) -> R<pb::Pool> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.fabric
            .with_view(|v, _| v.intent.pools.get(&r.name).map(pool_out))
            .map(Response::new)
            .ok_or_else(|| not_found("pool.name", format!("pool {:?}", r.name)))
    }

    async fn delete_pool(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let store = self.fabric.store();
        self.write(
            "pool deleted",
            dry,
            |i| validate::check_delete_pool(i, &r.name),
            store.delete_pool(&r.name),
        )
        .await
    }

    async fn create_nat_rule(&self, req: Request<pb::NatRule>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let n = nat_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "NAT rule created",
            dry,
            |i| validate::validate_nat(i, &n),
            store.create_nat(&n),
        )
        .await
    }

    async fn update_nat_rule(&self, req: Request<pb::NatRule>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let n = nat_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "NAT rule updated",
            dry,
            |i| validate::validate_nat_update(i, &n),
            store.update_nat(&n),
        )
        .await
    }

    async fn list_nat_rules(&self, req: Request<pb::ListRequest>) -> R<pb::NatRuleList> {
        self.auth(&req)?;
        let f = req.into_inner();
        let items = self.fabric.with_view(|v, _| {
            v.intent
                .nat_rules
                .values()
                .filter(|x| f.tenant.is_empty() || x.tenant == f.tenant)
                .filter(|x| f.vpc.is_empty() || x.vpc == f.vpc)
                .map(nat_out)
                .collect()
        });
        Ok(Response::new(pb::NatRuleList { items }))
    }

    async fn get_nat_rule(&self, req: Request<pb::ObjectRef>) -> R<pb::NatRule> {
        self.auth(&req)?;
        let r = req.into_inner();
        let key = VpcChildRef::new(&r.tenant, &r.vpc, &r.name);
        self.fabric
            .with_view(|v, _| v.intent.nat_rules.get(&key).map(nat_out))
            .map(Response::new)
            .ok_or_else(|| {
                not_found(
                    "nat.name",
                    format!(
                        "NAT rule {:?} in VPC {:?} of tenant {:?}",
                        r.name, r.vpc, r.tenant
                    ),
                )
            })
    }

    async fn delete_nat_rule(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let store = self.fabric.store();
        self.write(
            "NAT rule deleted",
            dry,
            |i| validate::check_delete_nat(i, &r.tenant, &r.vpc, &r.name),
            store.delete_nat(&r.tenant, &r.vpc, &r.name),
        )
        .await
    }

    async fn create_route(&self, req: Request<pb::Route>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = route_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "route created",
            dry,
            |i| validate::validate_route(i, &r),
            store.create_route(&r),
        )
        .await
    }

    async fn update_route(&self, req: Request<pb::Route>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = route_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "route updated",
            dry,
            |i| validate::validate_route_update(i, &r),
            store.update_route(&r),
        )
        .await
    }

    async fn list_routes(&self, req: Request<pb::ListRequest>) -> R<pb::RouteList> {
        self.auth(&req)?;
        let f = req.into_inner();
        let items = self.fabric.with_view(|v, _| {
            v.intent
                .routes
                .values()
                .filter(|x| f.tenant.is_empty() || x.tenant == f.tenant)
                .filter(|x| f.vpc.is_empty() || x.vpc == f.vpc)
                .map(route_out)
                .collect()
        });
        Ok(Response::new(pb::RouteList { items }))
    }

    async fn get_route(&self, req: Request<pb::ObjectRef>) -> R<pb::Route> {
        self.auth(&req)?;
        let r = req.into_inner();
        let key = VpcChildRef::new(&r.tenant, &r.vpc, &r.name);
        self.fabric
            .with_view(|v, _| v.intent.routes.get(&key).map(route_out))
            .map(Response::new)
            .ok_or_else(|| {
                not_found(
                    "route.name",
                    format!(
                        "route {:?} in VPC {:?} of tenant {:?}",
                        r.name, r.vpc, r.tenant
                    ),
                )
            })
    }

    async fn delete_route(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let store = self.fabric.store();
        self.write(
            "route deleted",
            dry,
            |i| validate::check_delete_route(i, &r.tenant, &r.vpc, &r.name),
            store.delete_route(&r.tenant, &r.vpc, &r.name),
        )
        .await
    }

    async fn create_load_balancer(&self, req: Request<pb::LoadBalancer>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let l = lb_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "load balancer created",
            dry,
            |i| validate::validate_lb(i, &l),
            store.create_lb(&l),
        )
        .await
    }

    async fn update_load_balancer(&self, req: Request<pb::LoadBalancer>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let l = lb_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "load balancer updated",
            dry,
            |i| validate::validate_lb_update(i, &l),
            store.update_lb(&l),
        )
        .await
    }

    async fn list_load_balancers(&self, req: Request<pb::ListRequest>) -> R<pb::LoadBalancerList> {
        self.auth(&req)?;
        let f = req.into_inner();
        let items = self.fabric.with_view(|v, _| {
            v.intent
                .load_balancers
                .values()
                .filter(|x| f.tenant.is_empty() || x.tenant == f.tenant)
                .filter(|x| f.vpc.is_empty() || x.vpc == f.vpc)
                .map(|x| lb_out(x, v))
                .collect()
        });
        Ok(Response::new(pb::LoadBalancerList { items }))
    }

    async fn get_load_balancer(&self, req: Request<pb::ObjectRef>) -> R<pb::LoadBalancer> {
        self.auth(&req)?;
        let r = req.into_inner();
        let key = VpcChildRef::new(&r.tenant, &r.vpc, &r.name);
        self.fabric
            .with_view(|v, _| v.intent.load_balancers.get(&key).map(|x| lb_out(x, v)))
            .map(Response::new)
            .ok_or_else(|| {
                not_found(
                    "lb.name",
                    format!(
                        "load balancer {:?} in VPC {:?} of tenant {:?}",
                        r.name, r.vpc, r.tenant
                    ),
                )
            })
    }

    async fn delete_load_balancer(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let store = self.fabric.store();
        self.write(
            "load balancer deleted",
            dry,
            |i| validate::check_delete_lb(i, &r.tenant, &r.vpc, &r.name),
            store.delete_lb(&r.tenant, &r.vpc, &r.name),
        )
        .await
    }

    async fn create_direct_connect(&self, req: Request<pb::DirectConnect>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let d = dc_in(req.into_inner())?;
        let _g = self.fabric.write_guard().await;
        self.validate(|i| validate::validate_dc(i, &d))?;
        if dry.0 {
            return Ok(self.dry_run_answer("Direct Connect created"));
        }
        let known = self.fabric.with_view(|v, _| v.alloc.vnis().clone());
        let (vni, rev) = self
            .fabric
            .store()
            .create_dc_hinted(&d, sf_core::VNI_POOL, Some(&known))
            .await
            .map_err(write_status)?;
        self.committed(&format!("Direct Connect created (hand-off VNI {vni})"), rev)
            .await
    }

    async fn list_direct_connects(
        &self,
        req: Request<pb::ListRequest>,
    ) -> R<pb::DirectConnectList> {
        self.auth(&req)?;
        let f = req.into_inner();
        let items = self.fabric.with_view(|v, _| {
            v.intent
                .direct_connects
                .values()
                .filter(|x| f.tenant.is_empty() || x.tenant == f.tenant)
                .filter(|x| f.vpc.is_empty() || x.vpc == f.vpc)
                .map(|x| dc_out(x, v))
                .collect()
        });
        Ok(Response::new(pb::DirectConnectList { items }))
    }

    async fn get_direct_connect(&self, req: Request<pb::ObjectRef>) -> R<pb::DirectConnect> {
        self.auth(&req)?;
        let r = req.into_inner();
        let key = VpcChildRef::new(&r.tenant, &r.vpc, &r.name);
        self.fabric
            .with_view(|v, _| v.intent.direct_connects.get(&key).map(|x| dc_out(x, v)))
            .map(Response::new)
            .ok_or_else(|| {
                not_found(
                    "dc.name",
                    format!(
                        "Direct Connect {:?} in VPC {:?} of tenant {:?}",
                        r.name, r.vpc, r.tenant
                    ),
                )
            })
    }

    async fn delete_direct_connect(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let _g = self.fabric.write_guard().await;
        self.validate(|i| validate::check_delete_dc(i, &r.tenant, &r.vpc, &r.name))?;
        let key = VpcChildRef::new(&r.tenant, &r.vpc, &r.name);
        let d = self
            .fabric
            .with_view(|v, _| v.intent.direct_connects.get(&key).cloned())
            .ok_or_else(|| not_found("dc.name", format!("Direct Connect {:?}", r.name)))?;
        if dry.0 {
            return Ok(self.dry_run_answer("Direct Connect deleted"));
        }
        let rev = self
            .fabric
            .store()
            .delete_dc(&d)
            .await
            .map_err(write_status)?;
        self.committed("Direct Connect deleted", rev).await
    }

    async fn apply_acl_list(&self, req: Request<pb::AclList>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let l = acl_in(req.into_inner())?;
        let store = self.fabric.store();
        self.write(
            "ACL list applied",
            dry,
            |i| validate::validate_acl(i, &l),
            store.put_acl(&l),
        )
        .await
    }

    async fn list_acl_lists(&self, req: Request<pb::ListRequest>) -> R<pb::AclListList> {
        self.auth(&req)?;
        let f = req.into_inner();
        let items = self.fabric.with_view(|v, _| {
            v.intent
                .acls
                .values()
                .filter(|x| f.tenant.is_empty() || x.tenant == f.tenant)
                .filter(|x| f.vpc.is_empty() || x.vpc == f.vpc)
                .map(acl_out)
                .collect()
        });
        Ok(Response::new(pb::AclListList { items }))
    }

    async fn get_acl_list(&self, req: Request<pb::ObjectRef>) -> R<pb::AclList> {
        self.auth(&req)?;
        let r = req.into_inner();
        let key = VpcChildRef::new(&r.tenant, &r.vpc, &r.name);
        self.fabric
            .with_view(|v, _| v.intent.acls.get(&key).map(acl_out))
            .map(Response::new)
            .ok_or_else(|| {
                not_found(
                    "acl.name",
                    format!("ACL list {:?} in VPC {:?}", r.name, r.vpc),
                )
            })
    }

    async fn delete_acl_list(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.auth(&req)?;
        let dry = DryRun::of(&req);
        let r = req.into_inner();
        let store = self.fabric.store();
        self.write(
            "ACL list deleted",
            dry,
            |i| validate::check_delete_acl(i, &r.tenant, &r.vpc, &r.name),
            store.delete_acl(&r.tenant, &r.vpc, &r.name),
        )
        .await
    }

    async fn list_placements(&self, req: Request<pb::Empty>) -> R<pb::PlacementList> {
        self.auth(&req)?;
        let out = self.fabric.with_view(|v, _| pb::PlacementList {
            items: v
                .intent
                .vpcs
                .values()
                .map(|vpc| {
                    let p = v
                        .intent
                        .placements
                        .get(&vpc.key())
                        .cloned()
                        .unwrap_or_default();
                    pb::Placement {
                        tenant: vpc.tenant.clone(),
                        vpc: vpc.name.clone(),
                        vpc_id: vpc.id,
                        primary: p.primary.unwrap_or_default(),
                        standby: p.standby.unwrap_or_default(),
                    }
                })
                .collect(),
            drained: v.intent.drained.iter().cloned().collect(),
        });
        Ok(Response::new(out))
    }

    async fn drain_gateway(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.set_drained(req, true).await
    }

    async fn undrain_gateway(&self, req: Request<pb::ObjectRef>) -> R<pb::WriteResult> {
        self.set_drained(req, false).await
    }

    async fn get_fleet_status(&self, req: Request<pb::Empty>) -> R<pb::FleetStatus> {
        self.auth(&req)?;
        let (view, revision) = self.fabric.view();
        let mut names: Vec<&String> = view.intent.nodes.keys().collect();
        for n in view.nodes.keys() {
            if !view.intent.nodes.contains_key(n) {
                names.push(n);
            }
        }
        let nodes = names
            .into_iter()
            .map(|name| {
                let live = view.nodes.get(name).cloned().unwrap_or_default();
                let desired = self.fabric.desired(name);
                let status = live.status.as_ref();
                // The agent's last ack on its stream is fresher than its etcd status, which it
                // rewrites only every few seconds when nothing but the revision changed.
                let ack = self
                    .fabric
                    .ack_of(name)
                    .filter(|a| status.is_none_or(|s| a.applied_revision >= s.applied_revision));
                let applied_revision = ack
                    .as_ref()
                    .map(|a| a.applied_revision)
                    .or(status.map(|s| s.applied_revision))
                    .unwrap_or(0);
                let applied_digest = ack
                    .as_ref()
                    .map(|a| a.applied_digest.clone())
                    .or(status.map(|s| s.applied_digest.clone()))
                    .unwrap_or_default();
                let errors = ack
                    .as_ref()
                    .map(|a| a.errors.clone())
                    .or(status.map(|s| s.errors.clone()))
                    .unwrap_or_default();
                let role = view
                    .intent
                    .nodes
                    .get(name)
                    .map(|n| n.role.as_str().to_string())
                    .or_else(|| status.map(|s| format!("{} (not in inventory)", s.role)))
                    .unwrap_or_default();
                pb::NodeStatus {
                    name: name.clone(),
                    role,
                    lease: if live.alive { "up" } else { "down" }.to_string(),
                    applied_revision,
                    desired_revision: desired.as_ref().map(|d| d.revision).unwrap_or(0),
                    in_sync: live.alive
                        && matches!(&desired, Some(d) if applied_digest == d.digest()),
                    errors,
                    status_json: status
                        .map(|s| serde_json::to_string(s).unwrap_or_default())
                        .unwrap_or_default(),
                    bgp_sessions: status
                        .map(|s| {
                            s.bgp_sessions
                                .iter()
                                .map(crate::convert::bgp_session)
                                .collect()
                        })
                        .unwrap_or_default(),
                    bgp_error: status.map(|s| s.bgp_error.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let (leader, replicas) = self.fabric.with_view(|v, _| {
            (
                v.leader
                    .as_ref()
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default(),
                v.replicas.iter().cloned().collect(),
            )
        });
        Ok(Response::new(pb::FleetStatus {
            intent_revision: revision as u64,
            nodes,
            leader,
            replicas,
            served_by: self.fabric.replica_name().to_string(),
        }))
    }
}
