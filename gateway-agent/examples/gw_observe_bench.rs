//! Observation cost of a gateway's VPC routers: N namespaces laid out like VPC routers
//! (transit and two tier veths, addresses, routes, forwarding on, a `stackfabric` nft table)
//! are observed as one reconcile pass does, router after router, through the agent's netlink
//! sockets and, as the baseline in the same run, through the former iproute2 observer
//! (`ip -n`, `ip netns exec … sysctl`). Prints `figure,value,baseline,ratio` lines; needs
//! root. Namespaces are named `<prefix><i>` (`--prefix`, default `sfgob<pid>-`) and removed
//! at the end, also after a failure.
//!
//!   gw_observe_bench [--routers N] [--prefix P]

use std::time::{Duration, Instant};

use sf_gateway_agent::device::{self, iproute2};
use sf_gateway_agent::kernel::Kernel;

struct Lab {
    names: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .status();
        }
    }
}

fn run(cmd: &str, args: &[&str], input: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut c = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    if let Some(i) = input {
        c.stdin.take().unwrap().write_all(i.as_bytes())?;
    }
    drop(c.stdin.take());
    anyhow::ensure!(c.wait()?.success(), "{cmd} {args:?} failed");
    Ok(())
}

/// One router-like namespace: what `plan_router` builds, without the host side.
fn build(lab: &mut Lab, name: &str, i: usize) -> anyhow::Result<()> {
    run("ip", &["netns", "add", name], None)?;
    lab.names.push(name.to_string());
    let (a, b) = (i / 256 % 256, i % 256);
    let batch = format!(
        "link set lo up\n\
         link add transit type veth peer name transit-p\n\
         link set transit alias stackfabric addrgenmode none\n\
         addr add 198.18.0.1/31 dev transit\n\
         link add t1 type veth peer name t1-p\n\
         link add t2 type veth peer name t2-p\n\
         link set t1 address 02:00:00:00:{a:02x}:{b:02x}\n\
         addr add 10.1.0.1/24 dev t1\naddr add 10.2.0.1/24 dev t2\n\
         link set transit up\nlink set t1 up\nlink set t2 up\n\
         route add default via 198.18.0.0 dev transit\n\
         route add 10.99.0.0/16 via 10.1.0.2\n"
    );
    run("ip", &["-n", name, "-batch", "-"], Some(&batch))?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
        None,
    )?;
    let nft = "table ip stackfabric {\n comment \"digest-0\"\n chain c {\n  type nat hook prerouting priority -100;\n }\n}\n";
    run("ip", &["netns", "exec", name, "nft", "-f", "-"], Some(nft))
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

/// Wall and CPU time of `f` over every namespace.
async fn pass<F, Fut>(names: &[String], f: F) -> anyhow::Result<(Duration, Duration)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (t, c) = (Instant::now(), cpu());
    for n in names {
        f(n.clone()).await?;
    }
    Ok((t.elapsed(), cpu() - c))
}

fn line(figure: &str, value: f64, baseline: f64) {
    let ratio = if value > 0.0 { baseline / value } else { 0.0 };
    println!("{figure},{value:.1},{baseline:.1},{ratio:.1}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut n, mut prefix) = (200usize, format!("sfgob{}-", std::process::id()));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--routers" => n = args.next().unwrap_or_default().parse()?,
            "--prefix" => prefix = args.next().unwrap_or_default(),
            _ => anyhow::bail!("usage: gw_observe_bench [--routers N] [--prefix P]"),
        }
    }
    let mut lab = Lab { names: vec![] };
    for i in 0..n {
        build(&mut lab, &format!("{prefix}{i}"), i)?;
    }
    let names = lab.names.clone();
    let k = std::sync::Arc::new(Kernel::default());
    let nl = |k: std::sync::Arc<Kernel>| {
        move |ns: String| {
            let k = k.clone();
            async move {
                device::observe_ns(&k, &ns).await?;
                Ok(())
            }
        }
    };
    let (open, _) = pass(&names, nl(k.clone())).await?;
    let (nl_wall, nl_cpu) = pass(&names, nl(k.clone())).await?;
    // One router's table replaced (as a reconcile of one change does): that one is read
    // with nft again, the others not.
    let nft1 = "table ip stackfabric\ndelete table ip stackfabric\ntable ip stackfabric {\n comment \"digest-1\"\n}\n";
    run(
        "ip",
        &["netns", "exec", &names[0], "nft", "-f", "-"],
        Some(nft1),
    )?;
    let reads = k.nft_reads();
    let (one_wall, one_cpu) = pass(&names, nl(k.clone())).await?;
    let one_reads = k.nft_reads() - reads;
    let (ip_wall, ip_cpu) = pass(&names, |ns| async move {
        iproute2::observe_ns(&ns).await?;
        Ok(())
    })
    .await?;
    let (nlk_wall, nlk_cpu) = pass(&names, |ns| {
        let k = k.clone();
        async move {
            device::observe_links(&k, &ns).await?;
            Ok(())
        }
    })
    .await?;
    let (ipk_wall, ipk_cpu) = pass(&names, |ns| async move {
        iproute2::observe_links(&ns).await?;
        Ok(())
    })
    .await?;
    println!("# one reconcile pass's observation of {n} VPC routers, router after router;");
    println!("# baseline: the former iproute2 observer; 'links' = links, addresses, routes, forwarding (no nft)");
    line(
        &format!("gw_observe_pass_ms_{n}_routers"),
        ms(nl_wall),
        ms(ip_wall),
    );
    line(
        &format!("gw_observe_pass_cpu_ms_{n}_routers"),
        ms(nl_cpu),
        ms(ip_cpu),
    );
    line(
        &format!("gw_observe_pass_ms_{n}_routers_one_nft_change"),
        ms(one_wall),
        ms(ip_wall),
    );
    line(
        &format!("gw_observe_pass_cpu_ms_{n}_routers_one_nft_change"),
        ms(one_cpu),
        ms(ip_cpu),
    );
    line(
        &format!("gw_observe_links_ms_{n}_routers"),
        ms(nlk_wall),
        ms(ipk_wall),
    );
    line(
        &format!("gw_observe_links_cpu_ms_{n}_routers"),
        ms(nlk_cpu),
        ms(ipk_cpu),
    );
    // The agent observes every router on each periodic resync (30 s) when nothing happens.
    let pct = |c: Duration| c.as_secs_f64() / 30.0 * 100.0;
    line(
        &format!("gw_idle_cpu_pct_of_a_core_{n}_routers_30s_resync"),
        pct(nl_cpu),
        pct(ip_cpu),
    );
    println!(
        "# first pass (opens {n} sockets, runs nft in each): {:.1} ms",
        ms(open)
    );
    println!("# nft runs in the pass after one change: {one_reads}");
    Ok(())
}
