//! FabricApi's `sf-dry-run` road and the Get RPCs, in process on the in-memory store: a dry
//! run is validated exactly as the write (a bad request is refused the same way), answers
//! `dry_run` at the current revision, and writes nothing; every kind can be read back by name.

mod common;

use std::sync::Arc;

use common::eventually;
use sf_coordinator::api::Api;
use sf_coordinator::fabric::Fabric;
use sf_coordinator::identity::Tokens;
use sf_proto::v1 as pb;
use sf_proto::v1::fabric_api_server::FabricApi;
use sf_store::intent::IntentStore;
use sf_store::keys::Keys;
use sf_store::mem::MemStore;
use tonic::{Code, Request};

fn req<T>(msg: T, dry: bool) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    if dry {
        r.metadata_mut()
            .insert("sf-dry-run", "true".parse().unwrap());
    }
    r
}

fn obj(tenant: &str, vpc: &str, name: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        tenant: tenant.into(),
        vpc: vpc.into(),
        name: name.into(),
    }
}

async fn api() -> (Api, Arc<Fabric>) {
    let kv = Arc::new(MemStore::new());
    let keys = Keys::new("/t");
    let store = IntentStore::new(kv.clone(), keys.clone());
    common::two_gateways_and_demo(&store, kv.as_ref(), &keys).await;
    let fabric = Fabric::new(store);
    tokio::spawn(fabric.clone().run());
    eventually("index loaded", || fabric.is_current().then_some(())).await;
    let api = Api {
        fabric: fabric.clone(),
        tokens: Tokens::parse("s3cret").unwrap(),
    };
    (api, fabric)
}

fn vpc(name: &str, cidr: &str) -> pb::Vpc {
    pb::Vpc {
        tenant: "demo".into(),
        name: name.into(),
        cidr: cidr.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_dry_run_validates_and_writes_nothing() {
    let (api, fabric) = api().await;
    let before = fabric.with_view(|_, rev| rev) as u64;

    let r = api
        .create_vpc(req(vpc("blue", "10.10.0.0/16"), true))
        .await
        .unwrap()
        .into_inner();
    assert!(r.dry_run);
    assert_eq!(r.revision, before, "validated against the current revision");
    let err = api
        .get_vpc(req(obj("demo", "", "blue"), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "a dry run creates nothing");

    // The same validation as a real write: a bad CIDR is refused, dry or not.
    let bad = api
        .create_vpc(req(vpc("red", "10.10.0.0/33"), true))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    // Tenant (the shared write road), network (allocating) and deletes.
    let t = pb::Tenant {
        name: "acme".into(),
        description: "d".into(),
    };
    assert!(
        api.create_tenant(req(t.clone(), true))
            .await
            .unwrap()
            .into_inner()
            .dry_run
    );
    let real = api
        .create_vpc(req(vpc("blue", "10.10.0.0/16"), false))
        .await
        .unwrap();
    assert!(!real.get_ref().dry_run);
    let net = pb::Network {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "web".into(),
        cidr: "10.10.1.0/24".into(),
        ..Default::default()
    };
    let n = api
        .create_network(req(net, true))
        .await
        .unwrap()
        .into_inner();
    assert!(n.dry_run && n.network.unwrap().vni > 0);
    let d = api
        .delete_vpc(req(obj("demo", "", "blue"), true))
        .await
        .unwrap()
        .into_inner();
    assert!(d.dry_run);
    let after = fabric.with_view(|_, rev| rev) as u64;
    assert_eq!(
        after,
        real.get_ref().revision,
        "only the real write moved the revision"
    );
    assert!(api
        .get_vpc(req(obj("demo", "", "blue"), false))
        .await
        .is_ok());
    let nets = api
        .list_networks(req(pb::ListRequest::default(), false))
        .await
        .unwrap()
        .into_inner();
    assert!(nets.items.is_empty());
    assert_eq!(
        api.get_tenant(req(obj("", "", "acme"), false))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn every_kind_reads_back_by_name() {
    let (api, _fabric) = api().await;
    let t = api
        .get_tenant(req(obj("", "", "demo"), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.name, "demo");
    api.create_vpc(req(vpc("blue", "10.10.0.0/16"), false))
        .await
        .unwrap();
    let pool = pb::Pool {
        name: "pub".into(),
        cidr: "203.0.113.0/24".into(),
        site: String::new(),
    };
    api.create_pool(req(pool.clone(), false)).await.unwrap();
    assert_eq!(
        api.get_pool(req(obj("", "", "pub"), false))
            .await
            .unwrap()
            .into_inner(),
        pool
    );
    let net = pb::Network {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "web".into(),
        cidr: "10.10.1.0/24".into(),
        ..Default::default()
    };
    api.create_network(req(net, false)).await.unwrap();
    let route = pb::Route {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "r1".into(),
        prefix: "192.168.0.0/24".into(),
        nexthop: "10.10.1.5".into(),
    };
    api.create_route(req(route.clone(), false)).await.unwrap();
    assert_eq!(
        api.get_route(req(obj("demo", "blue", "r1"), false))
            .await
            .unwrap()
            .into_inner(),
        route
    );
    let snat = pb::NatRule {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "out".into(),
        kind: Some(pb::nat_rule::Kind::Snat(pb::Snat {
            public_ip: "203.0.113.10".into(),
        })),
    };
    api.create_nat_rule(req(snat.clone(), false)).await.unwrap();
    assert_eq!(
        api.get_nat_rule(req(obj("demo", "blue", "out"), false))
            .await
            .unwrap()
            .into_inner(),
        snat
    );
    let missing = api
        .get_nat_rule(req(obj("demo", "blue", "nope"), false))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("\"nope\""), "{missing:?}");
}
