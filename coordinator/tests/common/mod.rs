//! Fixtures shared by the coordinator's integration tests (in-memory store).

use std::time::Duration;

use sf_core::model::{Node, NodeRole, Tenant};
use sf_store::intent::IntentStore;
use sf_store::keys::Keys;
use sf_store::KvStore;

/// Polls `f` every 20 ms for up to 6 s.
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Two live gateways (inventory and heartbeat) gw1 and gw2, and tenant `demo`.
pub async fn two_gateways_and_demo(store: &IntentStore, kv: &dyn KvStore, keys: &Keys) {
    for (n, lo) in [("gw1", "10.255.2.1"), ("gw2", "10.255.2.2")] {
        store
            .create_node(&Node {
                name: n.into(),
                role: NodeRole::Gateway,
                site: String::new(),
                asn: 65010,
                loopback: lo.parse().unwrap(),
                fabric_ports: vec!["leaf1".into()],
            })
            .await
            .unwrap();
        // Heartbeats count only with a lease, as agents write them.
        let lease = kv.lease_grant(3600).await.unwrap();
        kv.put(&keys.heartbeat(n), b"{}".to_vec(), lease)
            .await
            .unwrap();
    }
    store
        .create_tenant(&Tenant {
            name: "demo".into(),
            description: String::new(),
        })
        .await
        .unwrap();
}
