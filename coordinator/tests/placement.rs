//! The coordinator's index and placement controller on the in-memory store: a VPC is placed
//! on a live gateway, its router reaches exactly that gateway's desired state, and when the
//! gateway's heartbeat disappears (lease expiry) the VPC moves to its standby.

mod common;

use std::sync::Arc;

use common::eventually;

use sf_coordinator::fabric::Fabric;
use sf_core::event::VpcRef;
use sf_core::model::{Network, Vpc};
use sf_store::intent::IntentStore;
use sf_store::keys::Keys;
use sf_store::mem::MemStore;
use sf_store::KvStore;

#[tokio::test]
async fn vpc_router_follows_placement_and_fails_over_on_lease_loss() {
    let kv = Arc::new(MemStore::new());
    let keys = Keys::new("/t");
    let store = IntentStore::new(kv.clone(), keys.clone());
    common::two_gateways_and_demo(&store, kv.as_ref(), &keys).await;
    let vpc = Vpc {
        tenant: "demo".into(),
        name: "blue".into(),
        cidr: "10.10.0.0/16".parse().unwrap(),
        site: String::new(),
        id: 0,
    };
    let (id, _) = store.create_vpc(&vpc, 1..=10).await.unwrap();
    store
        .create_network(&Network {
            tenant: "demo".into(),
            vpc: "blue".into(),
            name: "web".into(),
            cidr: "10.10.1.0/24".parse().unwrap(),
            vni: 1_000_001,
            gateway: "10.10.1.1".parse().unwrap(),
        })
        .await
        .unwrap();

    let fabric = Fabric::new(store.clone());
    tokio::spawn(fabric.clone().run());
    tokio::spawn(fabric.clone().run_placement());
    // Placement runs on the elected leader only; this is the only replica.
    tokio::spawn(sf_coordinator::election::run(
        fabric.clone(),
        "c1".into(),
        5,
        Arc::new(tokio::sync::Notify::new()),
    ));

    let key = VpcRef::new("demo", "blue");
    let placement = eventually("placement", || {
        fabric.with_view(|v, _| v.intent.placements.get(&key).cloned())
    })
    .await;
    let primary = placement.primary.clone().unwrap();
    let standby = placement.standby.clone().unwrap();
    assert_ne!(primary, standby);

    let has_router = |node: &str| {
        fabric
            .desired(node)
            .map(|d| {
                d.routers()
                    .any(|r| r.id == id && r.tiers[0].vni == 1_000_001)
            })
            .unwrap_or(false)
    };
    eventually("router on the primary", || {
        has_router(&primary).then_some(())
    })
    .await;
    assert!(
        !has_router(&standby),
        "the standby must not serve the VPC too"
    );

    // The primary's lease expires: its heartbeat key vanishes.
    let rx = fabric.subscribe(&standby);
    kv.delete(&keys.heartbeat(&primary)).await.unwrap();
    eventually("failover to the standby", || {
        has_router(&standby).then_some(())
    })
    .await;
    assert!(
        !has_router(&primary),
        "the dead primary no longer serves the VPC"
    );
    let moved = fabric.with_view(|v, _| v.intent.placements[&key].clone());
    assert_eq!(moved.primary.as_deref(), Some(standby.as_str()));
    assert_eq!(moved.standby, None, "no third gateway to stand by");
    // The standby's subscribers were told.
    assert!(rx.has_changed().unwrap());
}
