//! Programming cost of a gateway's VPC routers: N routers (one tier each, SNAT, one static
//! route; planned by the agent's `plan_router`, active) are built by the netlink executor
//! and, as the baseline in the same run, by the former `ip` executor (`SF_GW_EXECUTOR=iproute2`
//! in the agent); then one change among N (a route added to one VPC) is applied as a
//! reconcile pass does it: every router observed, re-planned, the changed one executed.
//! The "host" is a network namespace of this process (`unshare` before the runtime starts),
//! the VPC namespaces are `<prefix>{n,o}<id>` (`--prefix`, default `sfgp<pid>-`); all are
//! removed at the end, also after a failure or SIGINT/SIGTERM. Prints
//! `figure,value,baseline,ratio`; needs root.
//!
//!   gw_program_bench [--routers N] [--prefix P]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sf_core::desired::{RouterRoute, RouterTier, VpcRouter};
use sf_gateway_agent::exec::Exec;
use sf_gateway_agent::kernel::Kernel;
use sf_gateway_agent::plan::{self, Action};
use sf_gateway_agent::{device, names};
use sf_linux::converge::{OnFailure, Pass, Step};

/// Removes the named namespaces of the run (the host namespace goes with the process).
struct Lab {
    prefix: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&self.prefix) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &n])
                    .status();
            }
        }
    }
}

fn router(i: u32) -> VpcRouter {
    let (a, b) = (i / 250, i % 250);
    VpcRouter {
        role: Default::default(),
        tenant: "bench".into(),
        vpc: format!("v{i}"),
        id: i,
        cidr: format!("10.{a}.{b}.0/24").parse().unwrap(),
        mac: sf_core::desired::vpc_mac(i),
        tiers: vec![RouterTier {
            name: "t".into(),
            vni: 1_000_000 + i,
            cidr: format!("10.{a}.{b}.0/25").parse().unwrap(),
            gateway: format!("10.{a}.{b}.1").parse().unwrap(),
            acl: None,
        }],
        routes: vec![RouterRoute {
            prefix: format!("172.{}.{b}.0/24", 16 + a).parse().unwrap(),
            nexthop: format!("10.{a}.{b}.5").parse().unwrap(),
        }],
        snat: Some(format!("198.51.{a}.{b}").parse().unwrap()),
        port_forwards: vec![],
        static_nats: vec![],
        load_balancers: vec![],
        direct_connects: vec![],
    }
}

/// CPU time of this process and its waited-for children.
fn cpu() -> Duration {
    let usage = |who| {
        // SAFETY: getrusage fills the struct it is given.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut r) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(r.ru_utime) + tv(r.ru_stime)
    };
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

/// Time spent, split into the `nft` loads (a process in both executors) and the rest.
#[derive(Default)]
struct Spent {
    wall: Duration,
    cpu: Duration,
    links: Duration,
    actions: usize,
}

/// Builds `routers` in namespaces `<prefix><id>` with one executor.
async fn build(
    prefix: &str,
    routers: &[VpcRouter],
    k: &Arc<Kernel>,
    iproute2: bool,
) -> anyhow::Result<Spent> {
    let host = device::observe_host(k).await?;
    let mut spent = Spent::default();
    let (t, c) = (Instant::now(), cpu());
    for r in routers {
        let (actions, problems) = plan::plan_router(prefix, r, &host, None, &[], true);
        anyhow::ensure!(problems.is_empty(), "{problems:?}");
        spent.actions += actions.len();
        for a in actions {
            let nft = matches!(a, Action::LoadNft { .. } | Action::LoadLbMaps { .. });
            let step = Exec::with(a, k, iproute2);
            let t1 = Instant::now();
            step.execute()
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", step.describe()))?;
            if !nft {
                spent.links += t1.elapsed();
            }
            if std::env::var_os("GW_BENCH_TRACE").is_some() {
                eprintln!("{:>8.2} ms {}", ms(t1.elapsed()), step.describe());
            }
        }
    }
    spent.wall = t.elapsed();
    spent.cpu = cpu() - c;
    Ok(spent)
}

/// One reconcile pass after router `changed`'s desired state changed: every router
/// observed and planned, the changed one's steps executed. Returns wall time and the steps.
async fn one_change(
    prefix: &str,
    routers: &[VpcRouter],
    changed: &VpcRouter,
    k: &Arc<Kernel>,
    iproute2: bool,
) -> anyhow::Result<(Duration, usize)> {
    let t = Instant::now();
    let host = device::observe_host(k).await?;
    let mut steps = 0;
    for r in routers {
        let r = if r.id == changed.id { changed } else { r };
        let ns = names::netns_name(prefix, r.id);
        let seen = device::observe_ns(k, &ns).await?;
        let (actions, _) = plan::plan_router(prefix, r, &host, Some(&seen), &[], true);
        let actions: Vec<Exec> = actions
            .into_iter()
            .map(|a| Exec::with(a, k, iproute2))
            .collect();
        steps += actions.len();
        let mut pass = Pass::default();
        anyhow::ensure!(
            pass.execute("bench", &actions, OnFailure::Stop).await,
            "{:?}",
            pass.errors
        );
    }
    Ok((t.elapsed(), steps))
}

fn line(figure: &str, value: f64, baseline: f64) {
    let ratio = if value > 0.0 { baseline / value } else { 0.0 };
    println!("{figure},{value:.1},{baseline:.1},{ratio:.1}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut n, mut prefix) = (200u32, format!("sfgp{}-", std::process::id()));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--routers" => n = args.next().unwrap_or_default().parse()?,
            "--prefix" => prefix = args.next().unwrap_or_default(),
            _ => anyhow::bail!("usage: gw_program_bench [--routers N] [--prefix P]"),
        }
    }
    // The "host" of the routers: a namespace of this process, before any thread exists, so
    // the runtime's threads and the processes they start are all in it.
    // SAFETY: unshare with a valid flag, single-threaded here.
    anyhow::ensure!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0,
        "unshare: {}",
        std::io::Error::last_os_error()
    );
    let _lab = Lab {
        prefix: prefix.clone(),
    };
    let mut batch = String::from("link set lo up\n");
    for i in 1..=2 * n {
        let br = format!("brvx-{}", 1_000_000 + i);
        batch.push_str(&format!("link add {br} type bridge\nlink set {br} up\n"));
    }
    let mut c = std::process::Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    c.stdin.take().unwrap().write_all(batch.as_bytes())?;
    anyhow::ensure!(c.wait()?.success(), "bridges");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            // Interrupted: return, so that the namespaces are removed (Lab's drop).
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = bench(n, &prefix) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                _ = term.recv() => Err(anyhow::anyhow!("terminated")),
            }
        })
}

async fn bench(n: u32, prefix: &str) -> anyhow::Result<()> {
    // Host-side link names carry the router id: the two executors build other ids.
    let new_set: Vec<VpcRouter> = (1..=n).map(router).collect();
    let old_set: Vec<VpcRouter> = (n + 1..=2 * n).map(router).collect();
    let (pn, po) = (format!("{prefix}n"), format!("{prefix}o"));
    let k = Arc::new(Kernel::default());
    let new = build(&pn, &new_set, &k, false).await?;
    let old = build(&po, &old_set, &k, true).await?;
    // One change: a second route in the middle VPC.
    let change = |set: &[VpcRouter]| {
        let mut c = set[set.len() / 2].clone();
        c.routes.push(RouterRoute {
            prefix: "192.0.2.0/24".parse().unwrap(),
            nexthop: std::net::Ipv4Addr::from(u32::from(c.tiers[0].gateway) + 4),
        });
        c
    };
    // A pass with nothing changed first: the observer's first look reads each router's
    // nftables once (then only when its generation moves), as a running agent has.
    one_change(&pn, &new_set, &new_set[0], &k, false).await?;
    one_change(&po, &old_set, &old_set[0], &k, true).await?;
    let (new_one, new_steps) = one_change(&pn, &new_set, &change(&new_set), &k, false).await?;
    let (old_one, old_steps) = one_change(&po, &old_set, &change(&old_set), &k, true).await?;
    anyhow::ensure!(
        new_steps == 1 && old_steps == 1,
        "one change ran {new_steps} / {old_steps} steps"
    );
    println!(
        "# programming {n} VPC routers ({} actions each, one an nft load), router after router;",
        new.actions / n as usize
    );
    println!("# baseline: the former ip executor (one process per action) in the same run");
    line(
        &format!("gw_program_ms_{n}_routers"),
        ms(new.wall),
        ms(old.wall),
    );
    line(
        &format!("gw_program_cpu_ms_{n}_routers"),
        ms(new.cpu),
        ms(old.cpu),
    );
    line(
        &format!("gw_program_links_addrs_routes_ms_{n}_routers"),
        ms(new.links),
        ms(old.links),
    );
    println!("# one route added to one of {n} VPCs: the reconcile pass (observe all, apply one)");
    line(
        &format!("gw_one_change_pass_ms_{n}_routers"),
        ms(new_one),
        ms(old_one),
    );
    Ok(())
}
