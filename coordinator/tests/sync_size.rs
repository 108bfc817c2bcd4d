//! A desired state far over gRPC's 4 MiB message limit reaches an agent whole: the real Sync
//! service over mTLS, the agent's real client (`sf_agent::sync::once`, which assembles the
//! parts), a hypervisor whose scope is 20,000 tiers of 2,000 VPCs.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use sf_coordinator::fabric::Fabric;
use sf_coordinator::sync::Sync;
use sf_core::model::{Network, Node, NodeRole, PortBinding, Tenant, Vpc};
use sf_proto::v1::agent_sync_server::AgentSyncServer;
use sf_store::intent::IntentStore;
use sf_store::keys::Keys;
use sf_store::mem::MemStore;
use sf_store::{KvStore, Op};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

const TIERS: u32 = 20_000;

/// A CA, the coordinator's server certificate and hv1's client certificate, as PEM files.
fn pki(dir: &std::path::Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, eku) in [
        ("coordinator", ExtendedKeyUsagePurpose::ServerAuth),
        ("hv1", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// hv1 with a port in each of `TIERS` tiers, written in one transaction.
async fn big_scope(kv: &MemStore, keys: &Keys) {
    let put = |key: String, value: Vec<u8>| Op::Put {
        key,
        value,
        lease: 0,
    };
    let json = |v: &dyn erased::Json| v.bytes();
    let mut ops = vec![
        put(
            keys.node("hv1"),
            json(&Node {
                name: "hv1".into(),
                role: NodeRole::Hypervisor,
                site: String::new(),
                asn: 65001,
                loopback: "10.255.1.1".parse().unwrap(),
                fabric_ports: vec!["leaf1".into()],
            }),
        ),
        put(
            keys.tenant("t"),
            json(&Tenant {
                name: "t".into(),
                description: String::new(),
            }),
        ),
    ];
    // Ten tiers per VPC: a hypervisor's tier carries its VPC's other tiers (peer ACLs), so
    // one VPC of 20,000 tiers would be 400 million peer entries.
    for v in 0..TIERS / 10 {
        ops.push(put(
            keys.vpc("t", &format!("v{v}")),
            json(&Vpc {
                ipv6_ranges: Vec::new(),
                tenant: "t".into(),
                name: format!("v{v}"),
                cidr: "10.0.0.0/8".parse().unwrap(),
                site: String::new(),
                id: v + 1,
            }),
        ));
    }
    for i in 0..TIERS {
        let (a, b) = (i / 256, i % 256);
        let vpc = format!("v{}", i / 10);
        let name = format!("tier-{i:05}");
        ops.push(put(
            keys.network("t", &vpc, &name),
            json(&Network {
                ipv6_prefix: None,
                tenant: "t".into(),
                vpc: vpc.clone(),
                name: name.clone(),
                cidr: format!("10.{a}.{b}.0/24").parse().unwrap(),
                vni: 100_000 + i,
                gateway: format!("10.{a}.{b}.1").parse().unwrap(),
            }),
        ));
        let port = format!("vm-{i:05}");
        ops.push(put(
            keys.port("t", &port),
            json(&PortBinding {
                ipv6: None,
                tenant: "t".into(),
                name: port.clone(),
                vpc,
                network: name,
                node: "hv1".into(),
                ip: format!("10.{a}.{b}.11").parse().unwrap(),
                mac: Some(format!("52:54:00:00:{a:02x}:{b:02x}")),
                attach: None,
            }),
        ));
    }
    assert!(kv.txn(vec![], ops).await.unwrap().succeeded);
}

/// Serializes any of the model's types (a tiny object-safe wrapper over serde).
mod erased {
    pub trait Json {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap()
        }
    }
}

#[derive(Parser)]
struct AgentCli {
    #[command(flatten)]
    args: sf_agent::AgentArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_over_4_mib_syncs_whole() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let kv = Arc::new(MemStore::new());
    let keys = Keys::new("/t");
    big_scope(&kv, &keys).await;
    let fabric = Fabric::new(IntentStore::new(kv.clone(), keys));
    tokio::spawn(fabric.clone().run());
    // Loading and compiling 20,000 tiers takes longer than `wait_loaded`'s 10 s on a busy
    // machine.
    let mut desired = None;
    for _ in 0..600 {
        desired = fabric.desired("hv1");
        if desired.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let desired = desired.expect("hv1 compiled within 60 s");
    assert_eq!(desired.objects.len() as u32, TIERS + 1, "underlay + tiers");

    let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read("coordinator.pem"),
            read("coordinator.key"),
        ))
        .client_ca_root(Certificate::from_pem(read("ca.pem")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AgentSyncServer::new(Sync::new(fabric.clone(), true)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let cli = AgentCli::parse_from([
        "agent".to_string(),
        "--node=hv1".into(),
        format!("--coordinator=https://{addr}"),
        format!("--tls-cert={}", p("hv1.pem")),
        format!("--tls-key={}", p("hv1.key")),
        format!("--tls-ca={}", p("ca.pem")),
        format!("--state-dir={}", p("state")),
    ]);
    let dump = tokio::time::timeout(Duration::from_secs(60), sf_agent::sync::once(&cli.args))
        .await
        .expect("within 60 s")
        .expect("the whole snapshot arrives");
    assert!(
        dump.len() > 5 << 20,
        "the scope is over 5 MiB as JSON ({} bytes)",
        dump.len()
    );
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let objects = v["snapshot"]["objects"].as_object().expect("a snapshot");
    assert_eq!(objects.len() as u32, TIERS + 1, "every object arrived");
    assert!(
        objects.keys().eq(desired.objects.keys()),
        "the objects are the node's desired objects"
    );
}
