//! Coordinator replicas on one (in-memory) store: exactly one leads and places VPCs, a
//! follower takes over when the leader resigns or its lease expires, and API-style writes
//! through two replicas serialize on the intent-version fence.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::eventually;

use sf_coordinator::fabric::Fabric;
use sf_core::event::VpcRef;
use sf_core::model::{Tenant, Vpc};
use sf_store::intent::{IntentStore, WriteError};
use sf_store::keys::Keys;
use sf_store::mem::MemStore;
use tokio::sync::Notify;

struct Replica {
    fabric: Arc<Fabric>,
    resign: Arc<Notify>,
    election: tokio::task::JoinHandle<()>,
}

fn replica(kv: &Arc<MemStore>, name: &str) -> Replica {
    let fabric = Fabric::new(IntentStore::new(kv.clone(), Keys::new("/t")));
    tokio::spawn(fabric.clone().run());
    tokio::spawn(fabric.clone().run_placement());
    let resign = Arc::new(Notify::new());
    let election = tokio::spawn(sf_coordinator::election::run(
        fabric.clone(),
        name.into(),
        2,
        resign.clone(),
    ));
    Replica {
        fabric,
        resign,
        election,
    }
}

fn leaders(rs: &[&Replica]) -> Vec<usize> {
    (0..rs.len())
        .filter(|&i| rs[i].fabric.leader_revision().is_some())
        .collect()
}

#[tokio::test]
async fn one_leader_places_and_a_follower_takes_over() {
    let kv = Arc::new(MemStore::new());
    let keys = Keys::new("/t");
    let store = IntentStore::new(kv.clone(), keys.clone());
    common::two_gateways_and_demo(&store, kv.as_ref(), &keys).await;

    let a = replica(&kv, "c1");
    let b = replica(&kv, "c2");
    let first = eventually("a leader", || {
        let l = leaders(&[&a, &b]);
        (l.len() == 1).then(|| l[0])
    })
    .await;
    // Both replicas see the same leader and both replicas registered.
    let (leader, follower) = if first == 0 { (&a, &b) } else { (&b, &a) };
    eventually("both views agree", || {
        let lv = leader.fabric.with_view(|v, _| v.leader.clone());
        let fv = follower.fabric.with_view(|v, _| v.leader.clone());
        let reps = follower.fabric.with_view(|v, _| v.replicas.len());
        (lv.is_some() && lv == fv && reps == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(leaders(&[&a, &b]).len(), 1, "never two leaders");

    // The leader places a new VPC.
    let vpc = |name: &str| Vpc {
        ipv6_ranges: Vec::new(),
        tenant: "demo".into(),
        name: name.into(),
        cidr: "10.10.0.0/16".parse().unwrap(),
        site: String::new(),
        id: 0,
    };
    store.create_vpc(&vpc("blue"), 1..=10).await.unwrap();
    let placed = |f: &Fabric, v: &str| {
        f.with_view(|view, _| {
            view.intent
                .placements
                .get(&VpcRef::new("demo", v))
                .and_then(|p| p.primary.clone())
        })
    };
    eventually("blue placed", || placed(&follower.fabric, "blue")).await;

    // The leader resigns (SIGTERM): the follower leads within a tick or two and places.
    leader.resign.notify_one();
    let started = std::time::Instant::now();
    eventually("follower leads", || {
        follower.fabric.leader_revision().map(|_| ())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(leader.fabric.leader_revision().is_none());
    store.create_vpc(&vpc("red"), 1..=10).await.unwrap();
    eventually("red placed by the new leader", || {
        placed(&follower.fabric, "red")
    })
    .await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_after_its_lease_expires() {
    let kv = Arc::new(MemStore::new());
    let a = replica(&kv, "c1");
    eventually("c1 leads", || a.fabric.leader_revision()).await;
    let b = replica(&kv, "c2");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        b.fabric.leader_revision().is_none(),
        "c1 still holds the lease"
    );
    // A crash: the election task dies without revoking (its lease stops being renewed).
    a.election.abort();
    let started = std::time::Instant::now();
    eventually("c2 leads after the TTL", || b.fabric.leader_revision()).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "took {took:?} with a 2 s TTL"
    );
}

#[tokio::test]
async fn writes_through_two_replicas_serialize_on_the_intent_version() {
    let kv = Arc::new(MemStore::new());
    let a = replica(&kv, "c1");
    let b = replica(&kv, "c2");
    let tenant = |n: &str| Tenant {
        name: n.into(),
        description: String::new(),
    };
    eventually("views loaded", || {
        (a.fabric.with_view(|_, r| r) > 0 && b.fabric.with_view(|_, r| r) > 0).then_some(())
    })
    .await;
    // A validates; B commits in between; A's write must not commit on stale validation.
    let guard = a.fabric.write_guard().await;
    let rev = b.fabric.store().create_tenant(&tenant("b1")).await.unwrap();
    assert!(matches!(
        a.fabric.store().create_tenant(&tenant("a1")).await,
        Err(WriteError::Stale)
    ));
    drop(guard);
    // Once A's view has B's write, a new section succeeds.
    a.fabric.wait_for_revision(rev).await;
    let _guard = a.fabric.write_guard().await;
    a.fabric.store().create_tenant(&tenant("a1")).await.unwrap();
}
