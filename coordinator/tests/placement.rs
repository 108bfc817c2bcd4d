//! The coordinator's index and placement controller on the in-memory store: a VPC is placed
//! on two live gateways, its router reaches both (primary, and standby held warm), and
//! placement follows what the gateways report of the fabric: a primary that lost its lease is
//! kept while another gateway sees it announcing, a standby that reports it took over becomes
//! the primary, and a primary gone from both etcd and the fabric is replaced by its standby.

mod common;

use std::sync::Arc;

use common::eventually;

use sf_coordinator::fabric::Fabric;
use sf_core::desired::RouterRole;
use sf_core::event::VpcRef;
use sf_core::model::{Network, Vpc};
use sf_core::status::{AgentStatus, FailoverStatus};
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
        ipv6_ranges: Vec::new(),
        tenant: "demo".into(),
        name: "blue".into(),
        cidr: "10.10.0.0/16".parse().unwrap(),
        site: String::new(),
        id: 0,
    };
    let (id, _) = store.create_vpc(&vpc, 1..=10).await.unwrap();
    store
        .create_network(&Network {
            ipv6_prefix: None,
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

    let role_on = |node: &str| {
        fabric.desired(node).and_then(|d| {
            d.routers()
                .find(|r| r.id == id && r.tiers[0].vni == 1_000_001)
                .map(|r| r.role)
        })
    };
    eventually("router on the primary", || {
        (role_on(&primary) == Some(RouterRole::Primary)).then_some(())
    })
    .await;
    assert_eq!(
        role_on(&standby),
        Some(RouterRole::Standby),
        "the standby holds the router warm"
    );
    let placed = || fabric.with_view(|v, _| v.intent.placements[&key].clone());
    let report = |node: &str, serving: &[&str], seen: &[&str]| {
        let st = AgentStatus {
            node: node.into(),
            role: "gateway".into(),
            failover: FailoverStatus {
                serving: serving.iter().map(|s| s.to_string()).collect(),
                seen_elsewhere: seen.iter().map(|s| s.to_string()).collect(),
            },
            ..Default::default()
        };
        let (kv, keys) = (kv.clone(), keys.clone());
        let node = node.to_string();
        async move {
            kv.put(&keys.status(&node), serde_json::to_vec(&st).unwrap(), 0)
                .await
                .unwrap();
        }
    };

    // The primary loses its lease (partitioned from etcd) while the standby still sees it
    // announce the VPC: nothing moves.
    report(&standby, &[], &["demo/blue"]).await;
    kv.delete(&keys.heartbeat(&primary)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(placed().primary.as_deref(), Some(primary.as_str()));

    // The fabric loses it too: the standby no longer sees it, and is promoted.
    let rx = fabric.subscribe(&standby);
    report(&standby, &[], &[]).await;
    eventually("failover to the standby", || {
        (placed().primary.as_deref() == Some(standby.as_str())).then_some(())
    })
    .await;
    assert_eq!(placed().standby, None, "no third gateway to stand by");
    eventually("the standby's router becomes primary", || {
        (role_on(&standby) == Some(RouterRole::Primary)).then_some(())
    })
    .await;
    assert_eq!(
        role_on(&primary),
        None,
        "the dead primary no longer holds it"
    );
    assert!(rx.has_changed().unwrap());

    // The old primary returns: it takes nothing back and becomes the standby.
    let lease = kv.lease_grant(3600).await.unwrap();
    kv.put(&keys.heartbeat(&primary), b"{}".to_vec(), lease)
        .await
        .unwrap();
    eventually("the returning node stands by", || {
        (placed().standby.as_deref() == Some(primary.as_str())).then_some(())
    })
    .await;
    assert_eq!(placed().primary.as_deref(), Some(standby.as_str()));

    // It reports it forwards the VPC (the fabric chose it): placement follows.
    report(&standby, &[], &["demo/blue"]).await;
    report(&primary, &["demo/blue"], &[]).await;
    eventually("placement follows the fabric", || {
        (placed().primary.as_deref() == Some(primary.as_str())).then_some(())
    })
    .await;
    assert_eq!(placed().standby.as_deref(), Some(standby.as_str()));
}
