//! Fan-out and reconnect: one real coordinator and real etcd, N
//! simulated agents. For a change that affects every agent (an ACL on the tier all of them
//! carry) and one that affects one (a port on one node): time from the API call to
//! each affected agent having applied it (the ack leaves right after), coordinator CPU per
//! change and memory per connected agent. Baseline: one etcd put observed through a watch.
//! Then the coordinator is restarted under the whole fleet, resuming versus forced snapshots.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use sf_proto::v1 as pb;
use sf_store::KvStore;

use crate::api;
use crate::fleet::{node_name, spawn_agents, Board, FleetConfig, Liveness};
use crate::procs::{cpu_secs, rss_kib};
use crate::stats::{ms, quantile, row};

pub struct FanoutArgs {
    pub sizes: Vec<usize>,
    pub bin_dir: PathBuf,
    pub samples_all: usize,
    pub samples_one: usize,
    pub lease_ttl: i64,
    /// Agents' state directories on this machine's disk instead of tmpfs (the old setup).
    pub state_on_disk: bool,
    /// Agents' and coordinator's keep-alive and status-flush intervals; figures of a run with
    /// [`Liveness::LEGACY`] are named with a `_legacy_liveness` suffix.
    pub liveness: Liveness,
}

const TENANT: &str = "bench";

/// How long the coordinator's CPU is sampled with the fleet connected and idle (two of the old
/// 5 s keep-alive periods).
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const VPC: &str = "v";

/// The floor any etcd-based control plane pays: put a key, see it on a watch.
pub async fn etcd_watch_floor(endpoint: &str, samples: usize) -> anyhow::Result<Vec<f64>> {
    let store = sf_store::etcd::EtcdStore::connect(&[endpoint.to_string()]).await?;
    let mut watch = store.watch("/bench-floor/", 0).await?;
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        store
            .put(
                &format!("/bench-floor/k{}", i % 8),
                i.to_string().into_bytes(),
                0,
            )
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
                // A progress notification, not the put.
                Ok(Some(Ok(b))) if b.is_progress() => continue,
                Ok(Some(Ok(_))) => out.push(ms(t.elapsed())),
                other => bail!("watch did not deliver the put: {other:?}"),
            }
            break;
        }
    }
    Ok(out)
}

fn acl(port: u32) -> pb::AclList {
    pb::AclList {
        tenant: TENANT.into(),
        vpc: VPC.into(),
        name: "fanout".into(),
        default_action: "allow".into(),
        tiers: vec!["t1".into()],
        rules: vec![pb::AclRule {
            number: 10,
            direction: "ingress".into(),
            action: "allow".into(),
            protocol: "tcp".into(),
            port_start: port,
            port_end: port,
            icmp_type: -1,
            icmp_code: -1,
            cidrs: vec!["0.0.0.0/0".into()],
        }],
    }
}

fn t1_ip(i: usize) -> String {
    format!("172.16.{}.{}", i / 200, 10 + i % 200)
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let mut b = crate::procs::Bench::start("fanout", &args.bin_dir).await?;
    let sfx = if args.liveness == Liveness::LEGACY {
        "_legacy_liveness"
    } else {
        ""
    };
    b.spec.keepalive_secs = Some(args.liveness.coordinator_keepalive_secs);
    let (dir, etcd, pki, token, spec) = (&b.dir, &b.etcd, &b.pki, &b.token, &b.spec);

    let floor = etcd_watch_floor(&etcd.endpoint, 200).await?;
    let (floor50, floor99) = (quantile(&floor, 0.5), quantile(&floor, 0.99));
    eprintln!("etcd put->watch floor: p50 {floor50:.2} ms, p99 {floor99:.2} ms");

    let (mut coord, _) = spec.start(false).await?;
    let mut api = api::connect(&spec.endpoint(), &pki.ca_path(), token).await?;
    api.create_tenant(pb::Tenant {
        name: TENANT.into(),
        ..Default::default()
    })
    .await?;
    api.create_vpc(pb::Vpc {
        tenant: TENANT.into(),
        name: VPC.into(),
        cidr: "172.16.0.0/12".into(),
        ..Default::default()
    })
    .await?;
    for (name, cidr) in [("t1", "172.16.0.0/16"), ("t2", "172.17.0.0/16")] {
        api.create_network(pb::Network {
            tenant: TENANT.into(),
            vpc: VPC.into(),
            name: name.into(),
            cidr: cidr.into(),
            ..Default::default()
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_base = rss_kib(coord.pid());
    let self_base = rss_kib(std::process::id());
    eprintln!("coordinator RSS with no nodes: {rss_base} KiB");

    let max = *args.sizes.iter().max().context("no fleet sizes")?;
    let board = Board::new(max);
    let state_root = crate::fleet::agent_state_root(dir, args.state_on_disk)?;
    let fleet = FleetConfig {
        coordinator: spec.endpoint(),
        etcd: etcd.endpoint.clone(),
        pki,
        state_root: &state_root,
        lease_ttl: args.lease_ttl,
        liveness: args.liveness,
    };
    let mut have = 0usize;
    let mut acl_port = 1000u32;
    let mut one_seq = 0usize;
    for &n in &args.sizes {
        // Grow the inventory: one node and one port on tier t1 each, through the API.
        let t = Instant::now();
        let mut port_rev = vec![0u64; n];
        let creates = futures::stream::iter(have..n)
            .map(|i| {
                let mut api = api.clone();
                async move {
                    let name = node_name(i);
                    api.create_node(api::node(&name, i, "")).await?;
                    let r = api
                        .create_port_binding(api::port(
                            TENANT,
                            VPC,
                            "t1",
                            &format!("p{i:05}"),
                            &name,
                            t1_ip(i),
                        ))
                        .await?;
                    anyhow::Ok((i, r.into_inner().revision))
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for c in creates {
            let (i, rev) = c?;
            port_rev[i] = rev;
        }
        eprintln!(
            "N={n}: {} nodes and ports created in {:.1} s",
            n - have,
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        spawn_agents(&fleet, &board, have, n).await?;
        for (i, &rev) in port_rev.iter().enumerate().skip(have) {
            if board
                .wait_all(&[i], rev, t, Duration::from_secs(300))
                .await
                .is_none()
            {
                bail!(
                    "agent {} never applied its port (revision {rev})",
                    node_name(i)
                );
            }
        }
        eprintln!(
            "N={n}: {} agents connected and synced in {:.1} s",
            n - have,
            t.elapsed().as_secs_f64()
        );
        have = n;
        // Agents reconnect once after their first lease grant (to get state that is fresh
        // for that lease): wait until every stream is open and the fleet is quiet.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let streams = coord.metric("sf_coordinator_agent_streams").await?;
            if streams as usize == n {
                break;
            }
            if Instant::now() > deadline {
                bail!("coordinator reports {streams} agent streams, expected {n}");
            }
        }
        let rss = rss_kib(coord.pid());
        let self_rss = rss_kib(std::process::id());
        // The fleet connected and nothing changing: what keeping it costs the coordinator
        // (keep-alive pings, lease renewals' and status reports' watch events).
        let cpu0 = cpu_secs(coord.pid());
        tokio::time::sleep(IDLE_WINDOW).await;
        let idle_cpu = (cpu_secs(coord.pid()) - cpu0) * 1000.0 / IDLE_WINDOW.as_secs_f64();
        eprintln!(
            "N={n}: fleet settled, coordinator idle CPU {idle_cpu:.0} ms/s; measuring changes"
        );

        // A change for every agent.
        let all: Vec<usize> = (0..n).collect();
        let mut lat_all = Vec::new();
        let mut last_agent = Vec::new();
        let mut cpu = Vec::new();
        let mut api_ms = Vec::new();
        for _ in 0..args.samples_all {
            acl_port += 1;
            let cpu0 = cpu_secs(coord.pid());
            // From the call, not its return: the API answers once the coordinator's own index
            // holds the write, and by then fast agents have often applied it already.
            let t = Instant::now();
            let r = api.apply_acl_list(acl(acl_port)).await?.into_inner();
            api_ms.push(ms(t.elapsed()));
            let Some(l) = board
                .wait_all(&all, r.revision, t, Duration::from_secs(300))
                .await
            else {
                bail!("N={n}: not every agent applied revision {}", r.revision);
            };
            cpu.push((cpu_secs(coord.pid()) - cpu0) * 1000.0);
            let l: Vec<f64> = l.into_iter().map(ms).collect();
            last_agent.push(l.iter().cloned().fold(0.0, f64::max));
            lat_all.extend(l);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // A change for one agent.
        let mut lat_one = Vec::new();
        for _ in 0..args.samples_one {
            let i = rand::random_range(0..n);
            one_seq += 1;
            let ip = format!("172.17.{}.{}", one_seq / 200, 10 + one_seq % 200);
            let t = Instant::now();
            let r = api
                .create_port_binding(api::port(
                    TENANT,
                    VPC,
                    "t2",
                    &format!("x{one_seq:05}"),
                    &node_name(i),
                    ip,
                ))
                .await?
                .into_inner();
            api_ms.push(ms(t.elapsed()));
            let Some(l) = board
                .wait_all(&[i], r.revision, t, Duration::from_secs(60))
                .await
            else {
                bail!(
                    "N={n}: {} did not apply revision {}",
                    node_name(i),
                    r.revision
                );
            };
            lat_one.push(ms(l[0]));
        }
        let floor_what = "etcd put->watch";
        row(
            &format!("fanout_all_p50_ms_N{n}{sfx}"),
            quantile(&lat_all, 0.5),
            floor50,
            &format!("{floor_what} p50"),
        );
        row(
            &format!("fanout_all_p99_ms_N{n}{sfx}"),
            quantile(&lat_all, 0.99),
            floor99,
            &format!("{floor_what} p99"),
        );
        row(
            &format!("fanout_all_last_agent_ms_N{n}{sfx}"),
            quantile(&last_agent, 0.5),
            floor50,
            "etcd put->watch p50; median over changes of the slowest agent",
        );
        row(
            &format!("fanout_one_p50_ms_N{n}{sfx}"),
            quantile(&lat_one, 0.5),
            floor50,
            &format!("{floor_what} p50"),
        );
        row(
            &format!("fanout_one_p99_ms_N{n}{sfx}"),
            quantile(&lat_one, 0.99),
            floor99,
            &format!("{floor_what} p99"),
        );
        row(
            &format!("api_write_p50_ms_N{n}{sfx}"),
            quantile(&api_ms, 0.5),
            floor50,
            &format!("{floor_what} p50; the call itself, committed and indexed"),
        );
        row(
            &format!("coordinator_cpu_ms_per_change_all_N{n}{sfx}"),
            quantile(&cpu, 0.5),
            0.0,
            "none",
        );
        row(
            &format!("coordinator_idle_cpu_ms_per_s_N{n}{sfx}"),
            idle_cpu,
            0.0,
            "none; the fleet connected, nothing changing",
        );
        row(
            &format!("coordinator_rss_kib_per_agent_N{n}{sfx}"),
            (rss.saturating_sub(rss_base)) as f64 / n as f64,
            rss_base as f64,
            "coordinator RSS KiB with no nodes",
        );
        row(
            &format!("sim_agent_rss_kib_per_agent_N{n}{sfx}"),
            (self_rss.saturating_sub(self_base)) as f64 / n as f64,
            0.0,
            "none; the simulating process, all agents share it",
        );
    }

    // Reconnect: restart the coordinator under the whole fleet, resume vs forced snapshots,
    // then resume again with a coordinator that cannot open the agents' TLS session tickets
    // (no ticket key file: a secret of its own), so every agent makes a full handshake.
    let mut results = Vec::new();
    for (always_snapshot, tickets) in [(false, true), (true, true), (false, false)] {
        coord.stop()?;
        let (c, healthy) = spec.start_with(always_snapshot, tickets).await?;
        coord = c;
        eprintln!(
            "restart (always_snapshot={always_snapshot}, tickets={tickets}): coordinator healthy after {:.0} ms",
            ms(healthy)
        );
        let deadline = Instant::now() + Duration::from_secs(600);
        // When each quarter of the fleet had resynced, from the coordinator's start: where
        // the time goes (the first agents are in after the handshakes, the last ones after
        // their reconnect backoff).
        let mut marks: Vec<(f64, f64)> = [0.25, 0.5, 0.75, 0.9, 0.99]
            .into_iter()
            .map(|q| (q, f64::NAN))
            .collect();
        loop {
            let done = coord.metric("sf_coordinator_sync_resumes").await?
                + coord.metric("sf_coordinator_sync_snapshots").await?;
            for (q, at) in marks.iter_mut() {
                if at.is_nan() && done >= *q * have as f64 {
                    *at = ms(coord.started.elapsed());
                }
            }
            if done as usize >= have {
                let shown: Vec<String> = marks
                    .iter()
                    .map(|(q, at)| format!("{:.0}% {at:.0} ms", q * 100.0))
                    .collect();
                eprintln!(
                    "restart (always_snapshot={always_snapshot}, tickets={tickets}): resynced by {}",
                    shown.join(", ")
                );
                break;
            }
            if Instant::now() > deadline {
                bail!("only {done} of {have} agents resynced after the restart");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = ms(coord.started.elapsed());
        let bytes = coord.metric("sf_coordinator_sync_sent_bytes").await?;
        let snaps = coord.metric("sf_coordinator_sync_snapshots").await?;
        let full = coord
            .metric("sf_coordinator_grpc_tls_full_handshakes")
            .await?;
        let resumed = coord
            .metric("sf_coordinator_grpc_tls_resumed_handshakes")
            .await?;
        eprintln!("restart (always_snapshot={always_snapshot}, tickets={tickets}): {have} agents resynced in {took:.0} ms, {snaps} snapshots, {bytes} bytes; TLS handshakes {full} full, {resumed} resumed");
        results.push((took, bytes));
    }
    row(
        &format!("reconnect_resync_ms_N{have}{sfx}"),
        results[0].0,
        results[1].0,
        "forced full snapshots",
    );
    row(
        &format!("reconnect_sent_bytes_N{have}{sfx}"),
        results[0].1,
        results[1].1,
        "forced full snapshots",
    );
    row(
        &format!("reconnect_resync_ms_N{have}_tls_resumed{sfx}"),
        results[0].0,
        results[2].0,
        "full TLS handshakes (no ticket key)",
    );
    coord.stop()?;
    drop(b);
    // The simulated agents' tasks die with the process (the caller exits right after).
    Ok(())
}
