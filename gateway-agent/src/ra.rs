//! Router advertisements of the active dual-stack VPC routers (issue 21): the VMs of a tier
//! configure their address by SLAAC from the tier's /64 and take the router's stable
//! link-local as their default router.
//!
//! One thread per VPC namespace of an active router, inside the namespace (`setns`, as the
//! health checkers do), with one raw ICMPv6 socket: it sends an RA on each dual-stack tier
//! three times a second apart when it starts (the router just became active), then every
//! [`INTERVAL`] ± [`JITTER`], and answers each Router Solicitation on that tier at once
//! (multicast to all nodes, at most every [`MIN_REPLY_GAP`] per tier). A passive router has
//! no thread: it sends nothing (its tier host ends are down anyway).
//!
//! The RA (RFC 4861 §4.2): hop limit 255 (set on the socket), source the tier's only
//! link-local (the VPC's stable one, so the kernel picks it), M=O=0 (SLAAC only), router
//! lifetime [`ROUTER_LIFETIME`], the source link-layer option (the VPC's virtual MAC), an
//! MTU option (the tier link's MTU) and one prefix-information option (L=1, A=1). Encoded
//! by hand (one fixed 64-byte message, held byte for byte by a test) rather than through a
//! packet crate dependency for a single message.

use std::collections::BTreeMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

/// Period of unsolicited RAs (RFC 4861 allows 4..1800 s; VMs booting wait at most this
/// long without soliciting).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Random spread of the period (RFC 4861 §6.2.4), so routers do not synchronise.
pub const JITTER: Duration = Duration::from_secs(2);
/// Spacing of the RAs sent when a router becomes active.
pub const BURST_GAP: Duration = Duration::from_secs(1);
/// How many RAs the burst has.
pub const BURST: u32 = 3;
/// Shortest gap between two solicited RAs on one tier.
pub const MIN_REPLY_GAP: Duration = Duration::from_millis(500);
/// Router lifetime advertised, seconds.
pub const ROUTER_LIFETIME: u16 = 1800;
/// Prefix lifetimes advertised (radvd's defaults), seconds.
pub const VALID_LIFETIME: u32 = 86_400;
pub const PREFERRED_LIFETIME: u32 = 14_400;

const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// One dual-stack tier: the router's link in the namespace and the /64 it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaTier {
    pub link: String,
    pub prefix: Ipv6Net,
}

/// What one namespace advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaConfig {
    /// The VPC's virtual MAC (the source link-layer option).
    pub mac: [u8; 6],
    pub tiers: Vec<RaTier>,
}

/// Parses a MAC as iproute2 prints it.
pub fn parse_mac(m: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = m
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// The ICMPv6 router advertisement (checksum left 0: the kernel fills it in on raw ICMPv6
/// sockets).
pub fn encode_ra(mac: [u8; 6], prefix: Ipv6Net, mtu: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    // Type, code, checksum, cur hop limit (what hosts should use), flags M=O=0.
    p.extend_from_slice(&[ND_ROUTER_ADVERT, 0, 0, 0, 64, 0]);
    p.extend_from_slice(&ROUTER_LIFETIME.to_be_bytes());
    p.extend_from_slice(&[0; 8]); // reachable time, retrans timer: unspecified
    p.extend_from_slice(&[1, 1]); // source link-layer address, 8 bytes
    p.extend_from_slice(&mac);
    p.extend_from_slice(&[5, 1, 0, 0]); // MTU, 8 bytes
    p.extend_from_slice(&mtu.to_be_bytes());
    // Prefix information, 32 bytes: on-link (L) and autonomous (A).
    p.extend_from_slice(&[3, 4, prefix.prefix_len(), 0xc0]);
    p.extend_from_slice(&VALID_LIFETIME.to_be_bytes());
    p.extend_from_slice(&PREFERRED_LIFETIME.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&prefix.trunc().addr().octets());
    p
}

/// The advertisers of a gateway: one thread per namespace, fed its configuration.
#[derive(Default)]
pub struct Advertisers {
    threads: BTreeMap<String, Advertiser>,
}

struct Advertiser {
    config: RaConfig,
    ino: (u64, u64),
    tx: mpsc::Sender<RaConfig>,
    thread: std::thread::JoinHandle<()>,
}

impl Advertisers {
    /// Namespaces with an advertiser.
    pub fn namespaces(&self) -> Vec<String> {
        self.threads.keys().cloned().collect()
    }

    /// Makes the advertisers match `wanted` (namespace → configuration of an active router):
    /// starts, reconfigures and stops threads (dropping the sender ends one). Returns problems.
    pub fn sync(&mut self, wanted: BTreeMap<String, RaConfig>) -> Vec<String> {
        self.threads.retain(|ns, _| wanted.contains_key(ns));
        let mut errors = Vec::new();
        for (ns, config) in wanted {
            let ino = match crate::health::netns_inode(&ns) {
                Ok(i) => i,
                Err(e) => {
                    errors.push(format!("router advertisements in {ns}: {e}"));
                    self.threads.remove(&ns);
                    continue;
                }
            };
            if let Some(a) = self.threads.get_mut(&ns) {
                if a.ino == ino && !a.thread.is_finished() {
                    if a.config != config && a.tx.send(config.clone()).is_ok() {
                        a.config = config;
                    }
                    continue;
                }
            }
            info!(%ns, tiers = config.tiers.len(), "starting router advertisements");
            let (tx, rx) = mpsc::channel();
            let (name, first) = (ns.clone(), config.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ra-{ns}"))
                .spawn(move || advertiser(name, ino, first, rx));
            match spawned {
                Ok(thread) => {
                    let a = Advertiser {
                        config,
                        ino,
                        tx,
                        thread,
                    };
                    self.threads.insert(ns, a);
                }
                Err(e) => errors.push(format!("router advertisement thread for {ns}: {e}")),
            }
        }
        errors
    }
}

/// The raw ICMPv6 socket of a namespace (opened after `setns`): hop limit 255 as RFC 4861
/// requires, only Router Solicitations received, reads time out so the thread can tick.
fn open_socket() -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV6,
        Type::from(libc::SOCK_RAW),
        Some(Protocol::ICMPV6),
    )?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    // ICMP6_FILTER: block every type (bit set = block) but RS.
    let mut filter = [u32::MAX; 8];
    let t = ND_ROUTER_SOLICIT as usize;
    filter[t >> 5] &= !(1u32 << (t & 31));
    // SAFETY: setsockopt with a correctly sized buffer on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            1, // ICMP6_FILTER
            filter.as_ptr().cast(),
            std::mem::size_of_val(&filter) as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// The MTU of link `name` in the socket's namespace (SIOCGIFMTU).
fn link_mtu(s: &Socket, name: &str) -> io::Result<u32> {
    // SAFETY: an all-zero ifreq is valid; the name is copied bounded and NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU fills ifr_ifru.ifru_mtu of the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the mtu member.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// The ifindex of link `name` in the calling thread's namespace.
fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Sends one RA for `tier` to all nodes on its link.
fn send_ra(s: &Socket, mac: [u8; 6], tier: &RaTier) -> io::Result<()> {
    let i = ifindex(&tier.link).ok_or_else(|| io::Error::other("no such link"))?;
    let ra = encode_ra(mac, tier.prefix, link_mtu(s, &tier.link)?);
    let to = SocketAddrV6::new(ALL_NODES, 0, 0, i);
    s.send_to(&ra, &to.into()).map(|_| ())
}

/// A small xorshift for the jitter (no need for a cryptographic generator).
fn jitter(state: &mut u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let span = JITTER.as_millis() as u64 * 2;
    (INTERVAL - JITTER) + Duration::from_millis(*state % (span + 1))
}

/// Per tier: when the next unsolicited RA is due, how many burst RAs are left, the last
/// solicited reply.
struct TierClock {
    next: Instant,
    burst_left: u32,
    replied: Option<Instant>,
}

fn advertiser(ns: String, ino: (u64, u64), first: RaConfig, rx: mpsc::Receiver<RaConfig>) {
    if let Err(e) = crate::health::enter_netns(&ns, ino) {
        warn!(%ns, error = %e, "router advertisements: cannot enter namespace");
        return;
    }
    let s = match open_socket() {
        Ok(s) => s,
        Err(e) => {
            warn!(%ns, error = %e, "router advertisements: no ICMPv6 socket");
            return;
        }
    };
    let mut rng = (Instant::now().elapsed().as_nanos() as u64 | 1) ^ u64::from(ino.1 as u32);
    let mut config = first;
    let mut clocks: BTreeMap<String, TierClock> = BTreeMap::new();
    loop {
        match rx.try_recv() {
            Ok(c) => config = c,
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => return,
        }
        let now = Instant::now();
        clocks.retain(|l, _| config.tiers.iter().any(|t| &t.link == l));
        for t in &config.tiers {
            let c = clocks.entry(t.link.clone()).or_insert(TierClock {
                next: now,
                burst_left: BURST,
                replied: None,
            });
            if c.next <= now {
                if let Err(e) = send_ra(&s, config.mac, t) {
                    warn!(%ns, link = %t.link, error = %e, "router advertisement not sent");
                }
                c.burst_left = c.burst_left.saturating_sub(1);
                c.next = now
                    + if c.burst_left > 0 {
                        BURST_GAP
                    } else {
                        jitter(&mut rng)
                    };
            }
        }
        answer_solicitations(&s, &ns, &config, &mut clocks);
    }
}

/// Waits (up to the read timeout) for Router Solicitations and answers each on its tier.
fn answer_solicitations(
    s: &Socket,
    ns: &str,
    config: &RaConfig,
    clocks: &mut BTreeMap<String, TierClock>,
) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
    let Ok((n, from)) = s.recv_from(&mut buf) else {
        return; // timeout (or a transient error): tick
    };
    // SAFETY: recv_from initialised the first n bytes.
    let first = (n > 0).then(|| unsafe { buf[0].assume_init() });
    let (Some(ND_ROUTER_SOLICIT), Some(from)) = (first, from.as_socket_ipv6()) else {
        return;
    };
    let Some(t) = config
        .tiers
        .iter()
        .find(|t| ifindex(&t.link) == Some(from.scope_id()))
    else {
        return;
    };
    let now = Instant::now();
    let c = clocks.get_mut(&t.link);
    if c.as_ref()
        .and_then(|c| c.replied)
        .is_some_and(|r| now.duration_since(r) < MIN_REPLY_GAP)
    {
        return;
    }
    if let Err(e) = send_ra(s, config.mac, t) {
        warn!(%ns, link = %t.link, error = %e, "solicited router advertisement not sent");
    }
    if let Some(c) = c {
        c.replied = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of RFC 4861 §4.2 and §4.6, written out field by field (checksum 0: the
    /// kernel fills it in).
    #[test]
    fn a_router_advertisement_is_encoded_as_rfc_4861_lays_it_out() {
        let mac = parse_mac("02:5f:00:00:00:07").unwrap();
        let ra = encode_ra(mac, "2001:db8:100:1::/64".parse().unwrap(), 1450);
        let want: Vec<u8> = [
            "86 00 0000 40 00 0708 00000000 00000000",
            "01 01 025f00000007",
            "05 01 0000 000005aa",
            "03 04 40 c0 00015180 00003840 00000000 20010db8010000010000000000000000",
        ]
        .join(" ")
        .split_whitespace()
        .flat_map(|w| {
            (0..w.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&w[i..i + 2], 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
        assert_eq!(ra, want);
        assert_eq!(ra.len(), 64);
    }

    #[test]
    fn a_prefix_with_host_bits_advertises_the_network() {
        let ra = encode_ra(
            [2, 0, 0, 0, 0, 1],
            "fd10:10:0:1::1/64".parse().unwrap(),
            1500,
        );
        assert_eq!(
            &ra[48..64],
            &"fd10:10:0:1::".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    #[test]
    fn jitter_stays_in_its_window() {
        let mut st = 0x1234_5678_9abc_def1;
        for _ in 0..1000 {
            let d = jitter(&mut st);
            assert!(d >= INTERVAL - JITTER && d <= INTERVAL + JITTER, "{d:?}");
        }
    }

    #[test]
    fn macs_parse_as_iproute2_prints_them() {
        assert_eq!(parse_mac("02:5f:00:00:00:07"), Some([2, 0x5f, 0, 0, 0, 7]));
        assert_eq!(parse_mac("02:5f:00:00:07"), None);
        assert_eq!(parse_mac("zz:5f:00:00:00:07"), None);
    }
}
