//! Dataplane figures for `deploy/bench.sh` (parts `lb` and `nat`), driving the real ruleset
//! renderer of [`sf_gateway_agent::nft`], never a hand copy of it.
//!
//! - `lb-flip --netns NS --backends 3,10 [--rounds R]`: loads a VPC router's table with one
//!   65,537-slot Maglev load balancer into the (existing, empty) namespace NS, then flips one
//!   backend down and up R times through each of two paths, timing each `nft -f`:
//!   the whole-map reload (`flush map` + every slot: what the agent did before) and the slot
//!   diff the agent does now ([`nft::map_load`]). After the last flip the kernel's map is read
//!   back and compared with the expected table, so a diff that leaves the map wrong fails the
//!   bench. Prints `figure,value,baseline,ratio` lines (median ms).
//! - `nat-table --forwards N [--iptables]`: prints the `nft -f` transaction the agent loads
//!   for a VPC router with N UDP port forwards (forward i: 203.0.113.(1 + i % 250), port
//!   1000 + i / 250, to 10.10.1.11, port 5000 + i); with `--iptables`, the same forwards as
//!   an `iptables-restore` file in CloudStack's virtual-router layout (one DNAT rule per
//!   forward in PREROUTING), the baseline of `deploy/lib/nat-bench.sh`.
//! - `udp-flood --dev DEV --dst-mac MAC --forwards N --seconds S`: sends 60-byte UDP frames
//!   on DEV (AF_PACKET, batches of 64 by `sendmmsg`) for S seconds, round robin over the N
//!   forwards' public address and port, each from a source address and port not used
//!   before in the run, so every packet is a new connection and walks the NAT rules
//!   (conntrack serves the rest of a connection). Prints the number of frames sent.
//! - `lb-table --backends N`: prints the `nft -f` transaction the agent loads for a VPC
//!   router with one load balancer, 203.0.113.20:80 over N backends 10.10.1.20+i:80
//!   (65,537 slots, all healthy), maps filled: the Maglev side of `deploy/lib/lb-bench.sh`.
//! - `http-serve --port P --name NAME [--threads T]`: a minimal HTTP/1.x server answering
//!   every request with `NAME` and closing the connection: a backend that costs less than
//!   the balancers it serves (python's http.server would be the bottleneck). T threads
//!   share the blocking accept (default 2).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sf_core::desired::{
    vpc_mac, HealthCheck, L4Protocol, LbBackend, LoadBalancer, PortForward, RouterTier, VpcRouter,
};
use sf_gateway_agent::nft::{self, LbLoad, LbTable, MapLoad};

const SLOTS: u32 = 65_537;

fn router(backends: usize) -> VpcRouter {
    VpcRouter {
        role: Default::default(),
        tenant: "bench".into(),
        vpc: "bench".into(),
        id: 1,
        cidr: "10.10.0.0/16".parse().expect("cidr"),
        mac: vpc_mac(1),
        tiers: vec![RouterTier {
            name: "web".into(),
            vni: 1_000_001,
            cidr: "10.10.1.0/24".parse().expect("cidr"),
            gateway: "10.10.1.1".parse().expect("ip"),
            acl: None,
        }],
        routes: vec![],
        snat: Some("203.0.113.10".parse().expect("ip")),
        port_forwards: vec![],
        static_nats: vec![],
        load_balancers: (backends > 0)
            .then(|| LoadBalancer {
                name: "web".into(),
                vip: "203.0.113.20".parse().expect("ip"),
                protocol: L4Protocol::Tcp,
                port: 80,
                backends: (0..backends)
                    .map(|i| LbBackend {
                        name: format!("10.10.1.{}:80", 20 + i),
                        ip: Ipv4Addr::new(10, 10, 1, 20 + i as u8).into(),
                        port: 80,
                        weight: 1,
                    })
                    .collect(),
                health: HealthCheck::None,
                table_size: SLOTS,
                public: true,
                source_cidrs: vec![],
                peer_down: Default::default(),
            })
            .into_iter()
            .collect(),
        direct_connects: vec![],
    }
}

/// Runs `nft -f -` with `script` in namespace `ns`; returns the wall time in ms.
fn nft_in(ns: &str, script: &str) -> Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("ip netns exec nft")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(script.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("nft -f failed in {ns}");
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

fn load(table_digest: &str, i: usize, m: MapLoad) -> String {
    nft::lb_script(&LbLoad {
        table_digest: table_digest.into(),
        digests: BTreeMap::from([(i, m.table().digest.clone())]),
        maps: vec![(i, m)],
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The map `lb0` as the kernel holds it: slot → "ip . port".
fn kernel_map(ns: &str) -> Result<BTreeMap<u32, String>> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "-j",
            "list",
            "map",
            "ip",
            nft::TABLE,
            "lb0",
        ])
        .output()?;
    if !out.status.success() {
        bail!("nft list map failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut m = BTreeMap::new();
    for o in v["nftables"].as_array().context("nftables")? {
        let Some(elem) = o["map"]["elem"].as_array() else {
            continue;
        };
        for e in elem {
            let slot = e[0].as_u64().context("slot")? as u32;
            let c = &e[1]["concat"];
            m.insert(slot, format!("{} . {}", c[0].as_str().unwrap_or("?"), c[1]));
        }
    }
    Ok(m)
}

fn expected(t: &LbTable) -> BTreeMap<u32, String> {
    t.table
        .iter()
        .enumerate()
        .map(|(s, &i)| {
            (
                s as u32,
                format!("{} . {}", t.targets[i as usize].0, t.targets[i as usize].1),
            )
        })
        .collect()
}

/// One size: (whole-map ms, diff ms, slots written by the diff), medians over `rounds`.
fn flip(ns: &str, backends: usize, rounds: usize) -> Result<(f64, f64, usize)> {
    let r = router(backends);
    let lb = &r.load_balancers[0];
    let table = nft::render_nft(&r);
    let td = nft::digest_of(&table).unwrap_or_default();
    let up = Arc::new(nft::lb_table(lb, &|_| true));
    let leaver = lb.backends[backends / 2].name.clone();
    let down = Arc::new(nft::lb_table(lb, &|b| b.name != leaver));
    nft_in(
        ns,
        &(nft::transaction(&table) + &load(&td, 0, MapLoad::Full(up.clone()))),
    )?;
    let (mut whole, mut diff, mut written) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        // The agent before: the whole map on each flip (it does not depend on the contents).
        for t in [&down, &up] {
            whole.push(nft_in(ns, &load(&td, 0, MapLoad::Full(t.clone())))?);
        }
        // Now: the slots that change between what is installed and the new table.
        for (from, to) in [(&up, &down), (&down, &up)] {
            let m = nft::map_load(lb, Some(&from.digest), to.clone());
            let MapLoad::Slots(_, slots) = &m else {
                bail!("{backends} backends: the flip is not incremental");
            };
            written = slots.len();
            diff.push(nft_in(ns, &load(&td, 0, m))?);
        }
    }
    // The last diff brought the map back to all-up: check it slot by slot.
    if kernel_map(ns)? != expected(&up) {
        bail!("{backends} backends: the kernel's map differs from the table after the diffs");
    }
    let m = nft::map_load(lb, Some(&up.digest), down.clone());
    nft_in(ns, &load(&td, 0, m))?;
    if kernel_map(ns)? != expected(&down) {
        bail!("{backends} backends: the kernel's map differs from the table after a down diff");
    }
    Ok((median(whole), median(diff), written))
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn lb_flip(args: &[String]) -> Result<()> {
    let ns = arg(args, "--netns").context("--netns NS")?;
    let rounds: usize = arg(args, "--rounds").unwrap_or("5").parse()?;
    let sizes = arg(args, "--backends").unwrap_or("3,10");
    println!("figure,value,baseline,ratio");
    for n in sizes.split(',') {
        let n: usize = n.parse()?;
        if !(2..=200).contains(&n) {
            bail!("--backends: 2 to 200 each");
        }
        let (whole, diff, written) = flip(ns, n, rounds)?;
        eprintln!("{n} backends: a flip writes {written} of {SLOTS} slots");
        println!(
            "lb_health_flip_ms_{n}_backends,{diff:.1},{whole:.1} (whole 65537-slot map; diff writes {written}),{:.2}",
            diff / whole
        );
    }
    Ok(())
}

/// Public address and port of forward `i` (see the module doc).
fn forward_public(i: usize) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(203, 0, 113, 1 + (i % 250) as u8),
        1000 + (i / 250) as u16,
    )
}

fn forwards(args: &[String]) -> Result<usize> {
    let n: usize = arg(args, "--forwards").context("--forwards N")?.parse()?;
    if n == 0 || n > 60_000 {
        bail!("--forwards: 1 to 60000");
    }
    Ok(n)
}

fn nat_table(args: &[String]) -> Result<()> {
    let n = forwards(args)?;
    let mut r = router(0);
    r.port_forwards = (0..n)
        .map(|i| {
            let (public_ip, public_port) = forward_public(i);
            PortForward {
                protocol: L4Protocol::Udp,
                public_ip,
                public_port,
                private_ip: "10.10.1.11".parse().expect("ip"),
                private_port: 5000 + i as u16,
            }
        })
        .collect();
    if args.iter().any(|a| a == "--iptables") {
        println!("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]");
        for p in &r.port_forwards {
            println!(
                "-A PREROUTING -d {}/32 -i transit -p udp -m udp --dport {} -j DNAT --to-destination {}:{}",
                p.public_ip, p.public_port, p.private_ip, p.private_port
            );
        }
        println!("COMMIT");
    } else {
        print!("{}", nft::transaction(&nft::render_nft(&r)));
    }
    Ok(())
}

fn lb_table_script(args: &[String]) -> Result<()> {
    let n: usize = arg(args, "--backends").context("--backends N")?.parse()?;
    if !(1..=200).contains(&n) {
        bail!("--backends: 1 to 200");
    }
    let r = router(n);
    let table = nft::render_nft(&r);
    let td = nft::digest_of(&table).unwrap_or_default();
    let all = Arc::new(nft::lb_table(&r.load_balancers[0], &|_| true));
    print!(
        "{}{}",
        nft::transaction(&table),
        load(&td, 0, MapLoad::Full(all))
    );
    Ok(())
}

/// Answers one connection: reads the request head, writes the response, closes.
fn answer(mut c: std::net::TcpStream, response: &[u8]) {
    use std::io::Read;
    let mut buf = [0u8; 2048];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = c.write_all(response);
}

fn http_serve(args: &[String]) -> Result<()> {
    let port: u16 = arg(args, "--port").unwrap_or("80").parse()?;
    let name = arg(args, "--name").context("--name NAME")?;
    let threads: usize = arg(args, "--threads").unwrap_or("2").parse()?;
    let body = format!("{name}\n");
    let response: Arc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    let listener = Arc::new(std::net::TcpListener::bind(("0.0.0.0", port))?);
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (l, r) = (listener.clone(), response.clone());
            std::thread::spawn(move || {
                for c in l.incoming().flatten() {
                    answer(c, &r);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("MAC needs 6 bytes: {s}"))
}

/// A 60-byte Ethernet/IPv4/UDP frame (UDP checksum 0: none).
fn frame(dst_mac: [u8; 6], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes()); // 20 + 8 + 18 bytes of payload
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.0.octets());
    ip[16..20].copy_from_slice(&dst.0.octets());
    let sum = (0..10)
        .map(|i| u16::from_be_bytes([ip[2 * i], ip[2 * i + 1]]) as u32)
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f[34..36].copy_from_slice(&src.1.to_be_bytes());
    f[36..38].copy_from_slice(&dst.1.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// An AF_PACKET socket bound to `dev`.
fn packet_socket(dev: &str) -> Result<(i32, libc::sockaddr_ll)> {
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: plain libc calls with valid arguments; the descriptor is owned by the caller.
    let (fd, index) = unsafe {
        (
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
            libc::if_nametoindex(name.as_ptr()),
        )
    };
    if fd < 0 || index == 0 {
        bail!(
            "AF_PACKET socket on {dev}: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = index as i32;
    sll.sll_halen = 6;
    Ok((fd, sll))
}

fn udp_flood(args: &[String]) -> Result<()> {
    const BATCH: usize = 64;
    let n = forwards(args)?;
    let dev = arg(args, "--dev").context("--dev DEV")?;
    let mac = parse_mac(arg(args, "--dst-mac").context("--dst-mac MAC")?)?;
    let seconds: f64 = arg(args, "--seconds").unwrap_or("3").parse()?;
    let (fd, mut sll) = packet_socket(dev)?;
    let mut frames = vec![[0u8; 60]; BATCH];
    let (start, mut sent, mut k) = (Instant::now(), 0u64, 0usize);
    while start.elapsed().as_secs_f64() < seconds {
        for f in frames.iter_mut() {
            // Source: 198.18.0.0/15 (65,536 hosts) x ports 1024-65535: no 5-tuple repeats
            // within 4 billion packets.
            let (host, port) = (k / n % 65_536, 1024 + k / n / 65_536 % 64_000);
            let src = Ipv4Addr::new(
                198,
                18 + (host >> 8 >> 8) as u8,
                (host >> 8) as u8,
                host as u8,
            );
            *f = frame(mac, (src, port as u16), forward_public(k % n));
            k += 1;
        }
        let mut iov: Vec<libc::iovec> = frames
            .iter_mut()
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr().cast(),
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; every pointer set below outlives the call.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|io| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = io;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` holds BATCH valid headers pointing into `frames`, `iov` and `sll`.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                bail!("sendmmsg: {e}");
            }
        } else {
            sent += r as u64;
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    println!("{sent}");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("lb-flip") => lb_flip(&args[1..]),
        Some("nat-table") => nat_table(&args[1..]),
        Some("udp-flood") => udp_flood(&args[1..]),
        Some("lb-table") => lb_table_script(&args[1..]),
        Some("http-serve") => http_serve(&args[1..]),
        _ => bail!("usage: dp_bench lb-flip --netns NS [--backends 3,10] [--rounds R] | nat-table --forwards N [--iptables] | udp-flood --dev DEV --dst-mac MAC --forwards N [--seconds S] | lb-table --backends N | http-serve --port P --name NAME [--threads T]"),
    }
}
