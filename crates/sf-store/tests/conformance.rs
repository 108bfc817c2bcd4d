//! Conformance suite: the same behaviour checks run against the in-memory twin and against a
//! real etcd that each test starts itself (a private data dir and loopback ports). If the
//! `etcd` binary is missing the etcd half is skipped with a notice, unless
//! `SF_REQUIRE_ETCD=1` (set by `deploy/test.sh`), which turns a missing etcd into a failure.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sf_core::model::{Network, Tenant, Vpc};
use sf_store::etcd::EtcdStore;
use sf_store::intent::{decode_event, ClusterView, IntentStore};
use sf_store::keys::Keys;
use sf_store::mem::MemStore;
use sf_store::{Compare, EventKind, KvStore, Op, StoreError};

/// A throwaway etcd server, killed on drop.
struct EtcdServer {
    child: Child,
    _dir: tempfile::TempDir,
    endpoint: String,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> Option<String> {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return Some(p.to_string());
        }
    }
    if std::env::var("SF_REQUIRE_ETCD").as_deref() == Ok("1") {
        panic!("SF_REQUIRE_ETCD=1 but no etcd binary found");
    }
    eprintln!("NOTICE: etcd not installed; skipping the etcd half of this conformance test");
    None
}

async fn start_etcd() -> Option<(EtcdServer, EtcdStore)> {
    let bin = etcd_binary()?;
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let child = Command::new(bin)
        .args([
            "--name",
            "conformance",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("conformance=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let server = EtcdServer {
        child,
        _dir: dir,
        endpoint: endpoint.clone(),
    };
    // A busy machine can take many seconds to start etcd (seen: >10 s while the kernel was
    // tearing down thousands of interfaces of another run).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while std::time::Instant::now() < deadline {
        if let Ok(store) = EtcdStore::connect(std::slice::from_ref(&server.endpoint)).await {
            if store.get("/probe").await.is_ok() {
                return Some((server, store));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd did not become ready at {endpoint}");
}

/// Runs `$body` (an async fn taking `Arc<dyn KvStore>`) against both implementations.
macro_rules! conformance {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn mem() {
                $body(Arc::new(MemStore::new())).await;
            }
            #[tokio::test]
            async fn etcd() {
                if let Some((_server, store)) = start_etcd().await {
                    $body(Arc::new(store)).await;
                }
            }
        }
    };
}

async fn put_get_list(s: Arc<dyn KvStore>) {
    let r1 = s.put("/t/a/1", b"one".to_vec(), 0).await.unwrap();
    let r2 = s.put("/t/a/2", b"two".to_vec(), 0).await.unwrap();
    s.put("/t/b/1", b"other".to_vec(), 0).await.unwrap();
    assert!(r2 > r1, "revisions increase");
    let got = s.get("/t/a/1").await.unwrap().unwrap();
    assert_eq!(got.value, b"one");
    assert_eq!(got.mod_revision, r1);
    let (kvs, rev) = s.list("/t/a/").await.unwrap();
    assert_eq!(
        kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/t/a/1", "/t/a/2"]
    );
    assert!(rev >= r2);
    let r3 = s.delete("/t/a/1").await.unwrap();
    assert!(r3 > r2);
    assert!(s.get("/t/a/1").await.unwrap().is_none());
}
conformance!(put_get_list_case, put_get_list);

async fn txn_compares(s: Arc<dyn KvStore>) {
    let put = |k: &str| Op::Put {
        key: k.into(),
        value: b"v".to_vec(),
        lease: 0,
    };
    let ok = s
        .txn(vec![Compare::Absent("/x/k".into())], vec![put("/x/k")])
        .await
        .unwrap();
    assert!(ok.succeeded);
    let again = s
        .txn(vec![Compare::Absent("/x/k".into())], vec![put("/x/k")])
        .await
        .unwrap();
    assert!(
        !again.succeeded,
        "create-if-absent must fail the second time"
    );
    let missing = s
        .txn(
            vec![Compare::Present("/x/parent".into())],
            vec![put("/x/child")],
        )
        .await
        .unwrap();
    assert!(!missing.succeeded);
    assert!(
        s.get("/x/child").await.unwrap().is_none(),
        "failed txn writes nothing"
    );
    let cur = s.get("/x/k").await.unwrap().unwrap().mod_revision;
    let stale = s
        .txn(
            vec![Compare::ModRevision("/x/k".into(), cur - 1)],
            vec![put("/x/k")],
        )
        .await
        .unwrap();
    assert!(!stale.succeeded);
    let fresh = s
        .txn(
            vec![Compare::ModRevision("/x/k".into(), cur)],
            vec![put("/x/k")],
        )
        .await
        .unwrap();
    assert!(fresh.succeeded);
    // Two ops in one txn share one revision.
    let both = s
        .txn(vec![], vec![put("/x/m1"), put("/x/m2")])
        .await
        .unwrap();
    let m1 = s.get("/x/m1").await.unwrap().unwrap();
    let m2 = s.get("/x/m2").await.unwrap().unwrap();
    assert_eq!(m1.mod_revision, both.revision);
    assert_eq!(m2.mod_revision, both.revision);
}
conformance!(txn_compares_case, txn_compares);

/// The next batch with events (progress notifications skipped), within 5 s.
async fn next_events(w: &mut sf_store::WatchStream) -> sf_store::WatchBatch {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let b = w.next().await.expect("watch open").expect("watch ok");
            if !b.is_progress() {
                return b;
            }
        }
    })
    .await
    .expect("watch delivers within 5 s")
}

async fn watch_confirms_progress(s: Arc<dyn KvStore>) {
    let r1 = s.put("/prog/a", b"1".to_vec(), 0).await.unwrap();
    let mut w = s.watch("/prog/", r1 + 1).await.unwrap();
    // A write outside the prefix: the watch has no event for it, but its progress covers it.
    let r2 = s.put("/prog-elsewhere", b"x".to_vec(), 0).await.unwrap();
    let confirmed = tokio::time::timeout(sf_store::PROGRESS_INTERVAL * 4, async {
        loop {
            let b = w.next().await.expect("watch open").expect("watch ok");
            assert!(b.is_progress(), "no event under /prog/ was written: {b:?}");
            if b.revision >= r2 {
                return b.revision;
            }
        }
    })
    .await
    .expect("a progress notification covering the store's revision");
    assert!(confirmed >= r2);
    // Events still come, and progress never runs ahead of an undelivered event.
    let r3 = s.put("/prog/b", b"2".to_vec(), 0).await.unwrap();
    let b = next_events(&mut w).await;
    assert_eq!(b.revision, r3);
}
conformance!(progress_case, watch_confirms_progress);

async fn watch_replays_and_follows(s: Arc<dyn KvStore>) {
    let r1 = s.put("/w/a", b"1".to_vec(), 0).await.unwrap();
    s.put("/elsewhere", b"x".to_vec(), 0).await.unwrap();
    let r2 = s.put("/w/b", b"2".to_vec(), 0).await.unwrap();
    let mut w = s.watch("/w/", r1).await.unwrap();
    let b1 = next_events(&mut w).await;
    assert_eq!(b1.revision, r1);
    assert_eq!(b1.events[0].kv.key, "/w/a");
    let b2 = next_events(&mut w).await;
    assert_eq!(b2.revision, r2, "keys outside the prefix are not delivered");
    let r3 = s.delete("/w/a").await.unwrap();
    let b3 = next_events(&mut w).await;
    assert_eq!(b3.revision, r3);
    assert_eq!(b3.events[0].kind, EventKind::Delete);
    assert_eq!(b3.events[0].kv.key, "/w/a");
}
conformance!(watch_case, watch_replays_and_follows);

async fn leases_expire_and_renew(s: Arc<dyn KvStore>) {
    let short = s.lease_grant(2).await.unwrap();
    let kept = s.lease_grant(2).await.unwrap();
    s.put("/l/short", b"x".to_vec(), short).await.unwrap();
    s.put("/l/kept", b"x".to_vec(), kept).await.unwrap();
    // Renew `kept` every 500 ms while `short` runs out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut short_gone = false;
    while tokio::time::Instant::now() < deadline {
        assert!(s.lease_keep_alive(kept).await.unwrap() > 0);
        if s.get("/l/short").await.unwrap().is_none() {
            short_gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(short_gone, "a lease without keep-alive must expire");
    assert!(
        s.get("/l/kept").await.unwrap().is_some(),
        "a renewed lease must hold"
    );
    let renewed = s.lease_keep_alive(short).await;
    assert!(
        matches!(renewed, Err(StoreError::LeaseNotFound(_))),
        "{renewed:?}"
    );
    s.lease_revoke(kept).await.unwrap();
    assert!(
        s.get("/l/kept").await.unwrap().is_none(),
        "revoking deletes the lease's keys"
    );
}
conformance!(lease_case, leases_expire_and_renew);

async fn concurrent_vni_allocation_is_unique(s: Arc<dyn KvStore>) {
    let st = IntentStore::new(s.clone(), Keys::new("/vni-test"));
    st.create_tenant(&Tenant {
        name: "t".into(),
        description: String::new(),
    })
    .await
    .unwrap();
    st.create_vpc(
        &Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "t".into(),
            name: "v".into(),
            cidr: "10.0.0.0/8".parse().unwrap(),
            site: String::new(),
            id: 0,
        },
        1..=100,
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            let n = Network {
                ipv6_prefix: None,
                tenant: "t".into(),
                vpc: "v".into(),
                name: format!("n{i}"),
                cidr: format!("10.{i}.0.0/24").parse().unwrap(),
                vni: 0,
                gateway: format!("10.{i}.0.1").parse().unwrap(),
            };
            st.create_network_allocating(&n, 1_000_000..=2_000_000)
                .await
                .unwrap()
                .0
        }));
    }
    let mut vnis = Vec::new();
    for t in tasks {
        vnis.push(t.await.unwrap());
    }
    let unique: std::collections::BTreeSet<u32> = vnis.iter().copied().collect();
    assert_eq!(
        unique.len(),
        vnis.len(),
        "duplicate VNIs handed out: {vnis:?}"
    );
    assert!(vnis.iter().all(|v| (1_000_000..=2_000_000).contains(v)));
    // The stored intent agrees with what was returned.
    let (view, _) = st.load().await.unwrap();
    let stored: std::collections::BTreeSet<u32> =
        view.intent.networks.values().map(|n| n.vni).collect();
    assert_eq!(stored, unique);
    // A second create of the same name is a conflict and allocates nothing.
    let dup = Network {
        ipv6_prefix: None,
        tenant: "t".into(),
        vpc: "v".into(),
        name: "n0".into(),
        cidr: "10.200.0.0/24".parse().unwrap(),
        vni: 0,
        gateway: "10.200.0.1".parse().unwrap(),
    };
    assert!(st
        .create_network_allocating(&dup, 1_000_000..=2_000_000)
        .await
        .is_err());
    let (allocs, _) = s.list("/vni-test/alloc/vni/").await.unwrap();
    assert_eq!(allocs.len(), 16);
    // A Direct Connect's hand-off segment draws from the same pool (its switch must exist),
    // and deleting it releases the VNI.
    st.create_node(&sf_core::model::Node {
        name: "leaf1".into(),
        role: sf_core::model::NodeRole::Switch,
        site: String::new(),
        asn: 65101,
        loopback: "10.255.0.1".parse().unwrap(),
        fabric_ports: vec![],
    })
    .await
    .unwrap();
    let dc = sf_core::model::DirectConnect {
        tenant: "t".into(),
        vpc: "v".into(),
        name: "cdc".into(),
        switch: "leaf1".into(),
        interface: "swp7".into(),
        vlan: Some(200),
        local_address: "169.254.100.1/30".parse().unwrap(),
        peer_address: "169.254.100.2".parse().unwrap(),
        local_asn: 64512,
        customer_asn: 65300,
        accept: vec!["192.168.0.0/16".parse().unwrap()],
        vni: 0,
    };
    let (dc_vni, _) = st
        .create_dc_allocating(&dc, 1_000_000..=2_000_000)
        .await
        .unwrap();
    assert!(!unique.contains(&dc_vni), "{dc_vni} is a network's VNI");
    let (view, _) = st.load().await.unwrap();
    let stored = &view.intent.direct_connects[&dc.key()];
    assert_eq!(stored.vni, dc_vni);
    assert_eq!(view.intent.used_vnis().len(), 17);
    st.delete_dc(stored).await.unwrap();
    let (allocs, _) = s.list("/vni-test/alloc/vni/").await.unwrap();
    assert_eq!(allocs.len(), 16, "the hand-off VNI is released");
}
conformance!(vni_alloc_case, concurrent_vni_allocation_is_unique);

/// VPC ids are unique per site: the default site and two named sites each start at 1, and
/// deleting a VPC frees its id in its own site only.
async fn vpc_ids_are_allocated_per_site(s: Arc<dyn KvStore>) {
    let st = IntentStore::new(s.clone(), Keys::new("/vpcid-test"));
    st.create_tenant(&Tenant {
        name: "t".into(),
        description: String::new(),
    })
    .await
    .unwrap();
    let vpc = |name: &str, site: &str| Vpc {
        ipv6_ranges: Vec::new(),
        tenant: "t".into(),
        name: name.into(),
        cidr: "10.0.0.0/8".parse().unwrap(),
        site: site.into(),
        id: 0,
    };
    let mut ids = Vec::new();
    for (name, site) in [
        ("a", ""),
        ("b", "fra1"),
        ("c", "fra1"),
        ("d", "ams1"),
        ("e", ""),
    ] {
        ids.push(st.create_vpc(&vpc(name, site), 1..=100).await.unwrap().0);
    }
    assert_eq!(ids, vec![1, 1, 2, 1, 2]);
    let mut b = vpc("b", "fra1");
    b.id = 1;
    st.delete_vpc(&b).await.unwrap();
    assert_eq!(st.create_vpc(&vpc("f", ""), 1..=100).await.unwrap().0, 3);
    assert_eq!(
        st.create_vpc(&vpc("g", "fra1"), 1..=100).await.unwrap().0,
        1
    );
    // An index that is behind (knows no ids) cannot cause a duplicate: the compare on the
    // allocation key turns each stale guess into a retry with the next id.
    let stale = sf_store::alloc::IdSet::new();
    let (id, _) = st
        .create_vpc_hinted(&vpc("h", ""), 1..=100, Some(&stale))
        .await
        .unwrap();
    assert_eq!(id, 4, "default site holds 1 (a), 2 (e), 3 (f)");
    // An index that is right skips straight to the free id.
    let known: sf_store::alloc::IdSet = [1, 2, 3, 4].into_iter().collect();
    let (id, _) = st
        .create_vpc_hinted(&vpc("i", ""), 1..=100, Some(&known))
        .await
        .unwrap();
    assert_eq!(id, 5);
}

conformance!(vpc_id_case, vpc_ids_are_allocated_per_site);

/// A prefix larger than one page (and than one 4 MiB response) lists completely, in key
/// order, with nothing from outside the prefix.
async fn large_prefixes_list_completely(s: Arc<dyn KvStore>) {
    let value = vec![b'x'; 2048];
    let keys: Vec<String> = (0..2345).map(|i| format!("/big/k{i:05}")).collect();
    for chunk in keys.chunks(100) {
        let ops = chunk
            .iter()
            .map(|k| Op::Put {
                key: k.clone(),
                value: value.clone(),
                lease: 0,
            })
            .collect();
        s.txn(vec![], ops).await.unwrap();
    }
    s.put("/big0", b"outside".to_vec(), 0).await.unwrap();
    s.put("/bif/k", b"outside".to_vec(), 0).await.unwrap();
    let (kvs, rev) = s.list("/big/").await.unwrap();
    assert!(rev > 0);
    let listed: Vec<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(listed, keys);
}

conformance!(large_list_case, large_prefixes_list_completely);

async fn watch_events_rebuild_the_same_view(s: Arc<dyn KvStore>) {
    let st = IntentStore::new(s.clone(), Keys::new("/view-test"));
    let (_, start) = st.load().await.unwrap();
    let mut w = s.watch("/view-test/", start + 1).await.unwrap();
    st.create_tenant(&Tenant {
        name: "t".into(),
        description: "d".into(),
    })
    .await
    .unwrap();
    st.create_vpc(
        &Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "t".into(),
            name: "v".into(),
            cidr: "10.0.0.0/16".parse().unwrap(),
            site: String::new(),
            id: 0,
        },
        1..=100,
    )
    .await
    .unwrap();
    let n = Network {
        ipv6_prefix: None,
        tenant: "t".into(),
        vpc: "v".into(),
        name: "n".into(),
        cidr: "10.0.1.0/24".parse().unwrap(),
        vni: 1_234_567,
        gateway: "10.0.1.1".parse().unwrap(),
    };
    let last = st.create_network(&n).await.unwrap();
    let mut view = ClusterView::default();
    loop {
        let b = next_events(&mut w).await;
        for e in &b.events {
            if let Some(e) = decode_event(st.keys(), e).unwrap() {
                view.apply(e).unwrap();
            }
        }
        if b.revision >= last {
            break;
        }
    }
    let (loaded, _) = st.load().await.unwrap();
    assert_eq!(view.intent, loaded.intent);
    assert_eq!(view.intent.networks.len(), 1);
}
conformance!(view_case, watch_events_rebuild_the_same_view);

/// Two coordinator replicas writing through their own [`IntentStore`] handles: a write
/// validated before the other replica's write fails as stale instead of committing, a fresh
/// fence succeeds, and a section's own writes do not fence each other out.
async fn fenced_writes_serialize_replicas(s: Arc<dyn KvStore>) {
    use sf_store::intent::WriteError;
    let keys = Keys::new("/fence");
    let a = IntentStore::new(s.clone(), keys.clone());
    let b = IntentStore::new(s.clone(), keys.clone());
    let tenant = |n: &str| Tenant {
        name: n.into(),
        description: String::new(),
    };
    let seq = |kv: Option<sf_store::KeyValue>| kv.map(|k| k.mod_revision).unwrap_or(0);
    // A validated at the current version (no intent yet: 0).
    a.set_fence(Some(seq(s.get(&keys.intent_seq()).await.unwrap())));
    // B writes first (unfenced: it still advances the version).
    b.create_tenant(&tenant("from-b")).await.unwrap();
    match a.create_tenant(&tenant("from-a")).await {
        Err(WriteError::Stale) => {}
        other => panic!("a write validated before B's must be stale, got {other:?}"),
    }
    assert!(s.get(&keys.tenant("from-a")).await.unwrap().is_none());
    // Validating again (the newer version) lets it through, twice in one section.
    a.set_fence(Some(seq(s.get(&keys.intent_seq()).await.unwrap())));
    a.create_tenant(&tenant("from-a")).await.unwrap();
    a.create_tenant(&tenant("from-a-2")).await.unwrap();
    // An ordinary conflict (the object exists) stays a conflict, not staleness.
    match a.create_tenant(&tenant("from-b")).await {
        Err(WriteError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    a.set_fence(None);

    // Placement is fenced on the leadership revision.
    let elected = s.put(&keys.leader(), b"c1".to_vec(), 0).await.unwrap();
    let change = vec![(sf_core::event::VpcRef::new("t", "v"), None)];
    a.write_placements(&change, Some(elected)).await.unwrap();
    s.put(&keys.leader(), b"c2".to_vec(), 0).await.unwrap();
    assert!(
        matches!(
            a.write_placements(&change, Some(elected)).await,
            Err(WriteError::Conflict(_))
        ),
        "a deposed leader's placement write must fail"
    );
}
conformance!(fenced_writes_case, fenced_writes_serialize_replicas);

/// With a dead member listed (first or last), every kind of request moves to the live one:
/// reads, writes that never reached the dead member, leases and their keep-alives, watches.
#[tokio::test]
async fn etcd_requests_move_off_a_dead_member() {
    let Some((server, _)) = start_etcd().await else {
        return;
    };
    let dead = format!("http://127.0.0.1:{}", free_port());
    for endpoints in [
        vec![dead.clone(), server.endpoint.clone()],
        vec![server.endpoint.clone(), dead.clone()],
        vec![dead.clone(), server.endpoint.clone(), dead.clone()],
    ] {
        // The starting member is random per store: try a few stores per order.
        for round in 0..3 {
            let s = EtcdStore::connect(&endpoints).await.unwrap();
            let key = format!("/failover/{}/{round}", endpoints.len());
            let rev = s.put(&key, b"v".to_vec(), 0).await.unwrap();
            assert!(rev > 0);
            assert_eq!(s.get(&key).await.unwrap().unwrap().value, b"v");
            let (kvs, _) = s.list("/failover/").await.unwrap();
            assert!(kvs.iter().any(|k| k.key == key));
            let lease = s.lease_grant(10).await.unwrap();
            assert!(s.lease_keep_alive(lease).await.unwrap() > 0);
            let mut w = s.watch(&key, rev).await.unwrap();
            let first = next_events(&mut w).await;
            assert_eq!(first.revision, rev);
            s.lease_revoke(lease).await.unwrap();
        }
    }
}

/// `list_except` returns every key under the prefix but those under the excluded sub-prefix,
/// in key order, all at one revision (etcd reads the two ranges around it).
async fn list_except_skips_one_sub_prefix(s: Arc<dyn KvStore>) {
    for k in [
        "/le/a/1",
        "/le/alloc/vni/7",
        "/le/alloc/x",
        "/le/allocx",
        "/le/alloc0",
        "/le/z/9",
        "/lf/outside",
    ] {
        s.put(k, k.as_bytes().to_vec(), 0).await.unwrap();
    }
    let rev = s.put("/le/b", b"last".to_vec(), 0).await.unwrap();
    let (kvs, at) = s.list_except("/le/", "/le/alloc/").await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["/le/a/1", "/le/alloc0", "/le/allocx", "/le/b", "/le/z/9"]
    );
    assert!(at >= rev);
}
conformance!(list_except_case, list_except_skips_one_sub_prefix);
