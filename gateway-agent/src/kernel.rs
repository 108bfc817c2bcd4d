//! The gateway's long-lived netlink sockets: one in the host namespace and one per VPC
//! namespace, each opened once (the VPC ones by a thread that `setns`es into the namespace,
//! see [`sf_linux::netlink::netns`]) and kept while the namespace lives, with the namespace's
//! `ip_forward` sysctl file and two NETLINK_NETFILTER sockets opened there too (the ruleset
//! generation, and rule dumps for the counters, see [`crate::nfrules`]). Observing a
//! router is then three dumps on an open socket, a `pread` and a ruleset-generation query,
//! instead of `ip -n`, `ip netns exec … sysctl` and `ip netns exec … nft` processes per pass:
//! what `nft` showed is kept with the generation it was read at, and `nft` runs again only
//! when the generation moved (any nftables change in that namespace bumps it).
//!
//! A socket keeps its namespace alive, so a router's socket is dropped before its namespace
//! is deleted ([`Kernel::forget`]) and whenever the namespace is no longer listed
//! ([`Kernel::retain`]); a namespace re-created under the same name (another inode) gets a
//! new socket.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sf_linux::netlink::changes::ChangeFlag;
use sf_linux::netlink::netns::{self, NsId};
use sf_linux::netlink::nfgen::NfGen;
use sf_linux::netlink::Netlink;
use sf_linux::DeviceError;
use sf_metrics::RuleSample;

use crate::nfrules::NfRules;

/// Where a namespace's IPv4 forwarding switch is (per namespace: the file opened inside one
/// reads and writes that namespace's value).
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// A namespace's IPv6 forwarding switch (`all`: every link, and the default of new ones).
pub const IP6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// The sockets of one VPC namespace.
#[derive(Debug)]
pub struct NsSocket {
    pub nl: Netlink,
    pub id: NsId,
    ip_forward: File,
    /// None when the kernel has no IPv6.
    ip6_forward: Option<File>,
    nfgen: NfGen,
    nfrules: NfRules,
    /// Whether the namespace's links, addresses or routes moved since the last look (None:
    /// could not subscribe, so always "moved").
    changes: Option<ChangeFlag>,
    /// What `nft` last showed, with the ruleset generation it was read at.
    nft_seen: Mutex<Option<(u32, NftSeen)>>,
}

/// The nftables digests of a namespace: the table's, the load balancer maps' by index, and
/// the IPv6 table's ([`crate::nft6`]).
pub type NftSeen = (
    Option<String>,
    BTreeMap<usize, String>,
    Option<String>,
    BTreeMap<usize, String>,
);

impl NsSocket {
    /// Whether IPv4 forwarding is on in this namespace.
    pub fn forwarding(&self) -> Result<bool, DeviceError> {
        read_flag(&self.ip_forward)
    }

    /// Whether IPv6 forwarding is on in this namespace (false without IPv6).
    pub fn forwarding6(&self) -> Result<bool, DeviceError> {
        self.ip6_forward.as_ref().map_or(Ok(false), read_flag)
    }

    /// Turns IPv6 forwarding on in this namespace.
    pub fn set_forwarding6(&self) -> Result<(), DeviceError> {
        let f = self.ip6_forward.as_ref().ok_or_else(|| {
            io_err(
                "open net.ipv6.conf.all.forwarding",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        f.write_at(b"1\n", 0)
            .map(|_| ())
            .map_err(|source| io_err("write net.ipv6.conf.all.forwarding", source))
    }

    /// Whether the namespace's links, addresses or routes changed since the last call
    /// (see [`ChangeFlag`]); true when unknown.
    pub fn moved(&self) -> bool {
        self.changes.as_ref().is_none_or(|c| c.take())
    }

    /// The namespace's nftables ruleset generation.
    pub fn nft_generation(&self) -> Result<u32, DeviceError> {
        self.nfgen
            .generation()
            .map_err(|source| io_err("read the nftables generation", source))
    }

    /// The rule counters of table `ip <table>` in this namespace, from one netlink dump.
    pub fn rule_counters(&self, table: &str, scope: &str) -> Result<Vec<RuleSample>, DeviceError> {
        self.nfrules
            .counters(table, scope)
            .map_err(|source| io_err("dump the nftables rules", source))
    }

    /// What `nft` showed at generation `generation`, if that is what was last read.
    pub fn nft_cached(&self, generation: u32) -> Option<NftSeen> {
        match &*self.nft_seen.lock().expect("nft cache lock") {
            Some((g, seen)) if *g == generation => Some(seen.clone()),
            _ => None,
        }
    }

    /// Records what `nft` showed; `generation` must have been read before `nft` ran, so a
    /// change made meanwhile moves the generation past it and is read on the next pass.
    pub fn nft_store(&self, generation: u32, seen: NftSeen) {
        *self.nft_seen.lock().expect("nft cache lock") = Some((generation, seen));
    }

    /// Turns IPv4 forwarding on in this namespace.
    pub fn set_forwarding(&self) -> Result<(), DeviceError> {
        self.ip_forward
            .write_at(b"1\n", 0)
            .map(|_| ())
            .map_err(|source| io_err("write ip_forward", source))
    }
}

fn read_flag(f: &File) -> Result<bool, DeviceError> {
    let mut buf = [0u8; 8];
    let n = f
        .read_at(&mut buf, 0)
        .map_err(|source| io_err("read ip_forward", source))?;
    Ok(buf[..n].trim_ascii() == b"1")
}

fn io_err(what: &str, source: std::io::Error) -> DeviceError {
    DeviceError::Spawn {
        cmd: what.into(),
        source,
    }
}

/// The sockets of the gateway (see the module docs). Cheap to share: clone the `Arc`.
#[derive(Debug, Default)]
pub struct Kernel {
    host: Mutex<Option<Netlink>>,
    ns: Mutex<HashMap<String, Arc<NsSocket>>>,
    /// How many times `nft` was run to observe a namespace (tests and the bench read it).
    nft_reads: AtomicU64,
}

impl Kernel {
    /// The host namespace's socket (opened on first use, in the agent's own namespace).
    pub fn host(&self) -> Result<Netlink, DeviceError> {
        let mut h = self.host.lock().expect("kernel lock");
        if let Some(nl) = h.as_ref() {
            return Ok(nl.clone());
        }
        let nl = Netlink::open().map_err(|e| e.on("open a netlink socket"))?;
        *h = Some(nl.clone());
        Ok(nl)
    }

    /// The sockets of VPC namespace `ns`, opened if needed (or if the namespace was
    /// re-created since).
    pub fn ns(&self, ns: &str) -> Result<Arc<NsSocket>, DeviceError> {
        let path = netns::path_of(ns);
        let current = netns::id_of(&path)
            .map_err(|source| io_err(&format!("stat {}", path.display()), source))?;
        if let Some(s) = self.ns.lock().expect("kernel lock").get(ns) {
            if s.id == current {
                return Ok(s.clone());
            }
        }
        let opened = netns::within(&path, || {
            let nl = Netlink::open();
            let f = File::options().read(true).write(true).open(IP_FORWARD);
            let f6 = File::options()
                .read(true)
                .write(true)
                .open(IP6_FORWARD)
                .ok();
            let changes = ChangeFlag::open().ok();
            (nl, (f, f6), NfGen::open(), NfRules::open(), changes)
        });
        let ((nl, (f, ip6_forward), nfgen, nfrules, changes), id) =
            opened.map_err(|source| io_err(&format!("enter namespace {ns}"), source))?;
        let s = Arc::new(NsSocket {
            nl: nl.map_err(|e| e.on(format!("open a netlink socket in {ns}")))?,
            id,
            ip_forward: f
                .map_err(|source| io_err(&format!("open {IP_FORWARD} in {ns}"), source))?,
            ip6_forward,
            nfgen: nfgen
                .map_err(|source| io_err(&format!("open a nfnetlink socket in {ns}"), source))?,
            nfrules: nfrules
                .map_err(|source| io_err(&format!("open a nfnetlink socket in {ns}"), source))?,
            changes,
            nft_seen: Mutex::new(None),
        });
        self.ns
            .lock()
            .expect("kernel lock")
            .insert(ns.to_string(), s.clone());
        Ok(s)
    }

    /// Drops the sockets of `ns` (before deleting it, or after a failure on them).
    pub fn forget(&self, ns: &str) {
        self.ns.lock().expect("kernel lock").remove(ns);
    }

    /// Keeps only the sockets of the namespaces in `live`.
    pub fn retain(&self, live: &BTreeSet<String>) {
        self.ns
            .lock()
            .expect("kernel lock")
            .retain(|n, _| live.contains(n));
    }

    /// Counts one run of `nft` for observation.
    pub fn count_nft_read(&self) {
        self.nft_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times `nft` was run for observation.
    pub fn nft_reads(&self) -> u64 {
        self.nft_reads.load(Ordering::Relaxed)
    }

    /// How many VPC namespaces have an open socket.
    pub fn open_namespaces(&self) -> usize {
        self.ns.lock().expect("kernel lock").len()
    }
}
