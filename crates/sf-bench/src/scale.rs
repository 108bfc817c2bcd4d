//! Intent scale: 1,000 and then 100,000 VPCs with two tiers each, written
//! straight into etcd in the store's key layout (as if created through the API, allocation
//! keys included). For each size: coordinator start-up time and memory, and the cost of one
//! change with everything else present: a port for one agent (call to applied), a VPC create
//! and a network create (both allocate an id). The figures must not grow with the total.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use sf_core::model::{Network, Tenant, Vpc};
use sf_proto::v1 as pb;
use sf_store::intent::MAX_TXN_OPS;
use sf_store::keys::Keys;
use sf_store::{KvStore, Op};

use crate::api;
use crate::fleet::{spawn_agents, Board, FleetConfig};
use crate::procs::rss_kib;
use crate::stats::{ms, quantile, row};

pub struct ScaleArgs {
    pub sizes: Vec<usize>,
    pub bin_dir: PathBuf,
    pub samples: usize,
}

const TENANT: &str = "bench";
/// VPC ids are per site (at most 65,000 each): spread the VPCs over sites of this size.
const VPCS_PER_SITE: usize = 50_000;

fn vpc_of(i: usize) -> Vpc {
    Vpc {
        ipv6_ranges: Vec::new(),
        tenant: TENANT.into(),
        name: format!("v{i:06}"),
        cidr: "10.0.0.0/16".parse().expect("cidr"),
        site: format!("s{}", i / VPCS_PER_SITE),
        id: (i % VPCS_PER_SITE) as u32 + 1,
    }
}

fn tiers_of(i: usize) -> [Network; 2] {
    let v = format!("v{i:06}");
    let net = |name: &str, third: u8, vni: u32| Network {
        ipv6_prefix: None,
        tenant: TENANT.into(),
        vpc: v.clone(),
        name: name.into(),
        cidr: format!("10.0.{third}.0/24").parse().expect("cidr"),
        vni,
        gateway: format!("10.0.{third}.1").parse().expect("gateway"),
    };
    let base = *sf_core::VNI_POOL.start() + 2 * i as u32;
    [net("a", 1, base), net("b", 2, base + 1)]
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("model types serialize")
}

fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put {
        key,
        value,
        lease: 0,
    }
}

/// Writes VPCs `from..to` with their tiers and allocation keys, [`MAX_TXN_OPS`] operations per
/// transaction, several transactions in flight.
async fn bulk_load(
    store: &sf_store::etcd::EtcdStore,
    keys: &Keys,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let mut ops = Vec::new();
    if from == 0 {
        let t = Tenant {
            name: TENANT.into(),
            description: String::new(),
        };
        ops.push(put(keys.tenant(TENANT), json(&t)));
    }
    for i in from..to {
        let v = vpc_of(i);
        ops.push(put(keys.vpc(TENANT, &v.name), json(&v)));
        ops.push(put(
            keys.vpc_id(&v.site, v.id),
            format!("{TENANT}/{}", v.name).into_bytes(),
        ));
        for n in tiers_of(i) {
            ops.push(put(keys.network(TENANT, &v.name, &n.name), json(&n)));
            ops.push(put(
                keys.vni(n.vni),
                format!("{TENANT}/{}/{}", v.name, n.name).into_bytes(),
            ));
        }
    }
    let batches: Vec<Vec<Op>> = ops.chunks(MAX_TXN_OPS).map(<[Op]>::to_vec).collect();
    let results = futures::stream::iter(batches)
        .map(|b| async move { store.txn(vec![], b).await })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for r in results {
        r.context("bulk load transaction")?;
    }
    Ok(())
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let b = crate::procs::Bench::start("scale", &args.bin_dir).await?;
    let (dir, etcd, pki, token, spec) = (&b.dir, &b.etcd, &b.pki, &b.token, &b.spec);
    let store = sf_store::etcd::EtcdStore::connect(std::slice::from_ref(&b.etcd.endpoint)).await?;
    let keys = Keys::default();
    let board = Board::new(1);
    let fleet = FleetConfig {
        coordinator: spec.endpoint(),
        etcd: etcd.endpoint.clone(),
        pki,
        state_root: &dir.join("agents"),
        lease_ttl: 6,
        liveness: crate::fleet::Liveness::DEFAULT,
    };
    let mut have = 0usize;
    let mut probe = 0usize;
    let mut seq = 0usize;
    let mut figures: Vec<(usize, [f64; 6])> = Vec::new();
    for &n in &args.sizes {
        let t = Instant::now();
        bulk_load(&store, &keys, have, n).await?;
        have = n;
        eprintln!(
            "{n} VPCs (x2 tiers) present; loaded in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let (coord, startup) = spec.start(false).await?;
        let rss = rss_kib(coord.pid());
        eprintln!(
            "coordinator up in {:.0} ms, RSS {} MiB",
            ms(startup),
            rss / 1024
        );
        let mut api = api::connect(&spec.endpoint(), &pki.ca_path(), token).await?;
        if figures.is_empty() {
            api.create_node(api::node("hv00000", 0, "s0")).await?;
            spawn_agents(&fleet, &board, 0, 1).await?;
        }
        // A port on the one agent: call to applied. The first change is not measured: after
        // the restart the agent reconnects on its own backoff, which is not what this measures.
        let mut port_ms = Vec::new();
        for sample in 0..=args.samples {
            seq += 1;
            let ip = format!("10.0.2.{}", 10 + seq % 240);
            let t = Instant::now();
            let r = api
                .create_port_binding(api::port(
                    TENANT,
                    "v000000",
                    "b",
                    &format!("p{seq}"),
                    "hv00000",
                    ip,
                ))
                .await?
                .into_inner();
            let Some(l) = board
                .wait_all(&[0], r.revision, t, Duration::from_secs(60))
                .await
            else {
                bail!("the agent did not apply revision {}", r.revision);
            };
            if sample > 0 {
                port_ms.push(ms(l[0]));
            }
            // Keep the VPC's address space: delete it again (measured as a change, too).
            api.delete_port_binding(pb::ObjectRef {
                tenant: TENANT.into(),
                name: format!("p{seq}"),
                ..Default::default()
            })
            .await?;
        }
        // A VPC and a network created through the API (each allocates an id).
        let mut vpc_ms = Vec::new();
        let mut net_ms = Vec::new();
        for _ in 0..args.samples {
            probe += 1;
            let name = format!("probe{probe}");
            let t = Instant::now();
            api.create_vpc(pb::Vpc {
                tenant: TENANT.into(),
                name: name.clone(),
                cidr: "10.0.0.0/16".into(),
                site: "s0".into(),
                ..Default::default()
            })
            .await?;
            vpc_ms.push(ms(t.elapsed()));
            let t = Instant::now();
            api.create_network(pb::Network {
                tenant: TENANT.into(),
                vpc: name,
                name: "a".into(),
                cidr: "10.0.1.0/24".into(),
                ..Default::default()
            })
            .await?;
            net_ms.push(ms(t.elapsed()));
        }
        figures.push((
            n,
            [
                ms(startup),
                rss as f64 / 1024.0,
                quantile(&port_ms, 0.5),
                quantile(&port_ms, 0.99),
                quantile(&vpc_ms, 0.5),
                quantile(&net_ms, 0.5),
            ],
        ));
        coord.stop()?;
    }
    let (base_n, base) = figures.first().cloned().context("no sizes")?;
    for (n, f) in figures.iter().skip(1) {
        let what = format!("{base_n} VPCs");
        row(
            &format!("coordinator_startup_ms_{n}_vpcs"),
            f[0],
            base[0],
            &what,
        );
        row(
            &format!("coordinator_rss_mib_{n}_vpcs"),
            f[1],
            base[1],
            &what,
        );
        row(
            &format!("port_change_to_applied_p50_ms_{n}_vpcs"),
            f[2],
            base[2],
            &what,
        );
        row(
            &format!("port_change_to_applied_p99_ms_{n}_vpcs"),
            f[3],
            base[3],
            &what,
        );
        row(
            &format!("vpc_create_api_p50_ms_{n}_vpcs"),
            f[4],
            base[4],
            &what,
        );
        row(
            &format!("network_create_api_p50_ms_{n}_vpcs"),
            f[5],
            base[5],
            &what,
        );
    }
    drop(b);
    Ok(())
}
