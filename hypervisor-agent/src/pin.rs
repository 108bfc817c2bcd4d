//! Anti-spoofing on a hypervisor's VM ports: which observed tap is which desired port, and
//! the `pin` chain of the `bridge stackfabric` table that holds every frame a VM sends to
//! its port's source MAC and IPv4 (and on dual-stack tiers IPv6) address (CloudStack's security groups do the same).
//! Pure: [`plan`] maps taps to ports, [`render_pin`] writes the chain; [`crate::acl`]
//! places it in the table.
//!
//! # Which tap is which port
//!
//! libvirt gives a VM's tap the VM's MAC with the first byte set to `0xfe` (so the bridge
//! never takes the tap's address as its own), and CloudStack's KVM agent keeps that. A tap
//! of `brvx-<VNI>` is therefore the port of that tier whose MAC equals the tap's in bytes
//! 2..6, when the tap's first byte is `fe`. Per-port pinning (rather than "any port of the
//! tier") stops a VM from borrowing a neighbour's address, which per-tier pinning allows.
//!
//! # What happens to a tap
//!
//! - [`TapFate::Pinned`]: the tap matches a port (several ports with one MAC are one NIC's
//!   addresses, e.g. secondary IPs): frames must carry the port's MAC, IPv4
//!   frames its address (or 0.0.0.0 for a DHCP request), ARP its MAC and address (or
//!   0.0.0.0 for a probe). On a dual-stack tier (a `net6/<VNI>` object), IPv6 frames
//!   must come from the port's `ipv6`, its MAC's link-local or `::` (duplicate address
//!   detection), and neighbour advertisements may only name those addresses
//!   ([`render_pin6`]). Other ethertypes, and IPv6 on IPv4-only tiers, only have the MAC
//!   pinned.
//! - [`TapFate::Stray`]: the tier has ports, all with a MAC, none matches: every frame from
//!   and to the tap is dropped (fail closed) until a port for it arrives.
//! - [`TapFate::Unpinned`]: the tier has no ports at all (CloudStack's Netris plugin never
//!   tells the network about VM NICs), or one without a MAC that the tap may be: nothing to
//!   pin with; the tap is only dispatched.
//!
//! Taps named `vnet*` that did not exist at the last rendering are dropped by the table
//! until the agent's next pass (woken by the link monitor). This kernel has no
//! `NFT_BRIDGE_META`, so a rule cannot ask which bridge a frame crosses: the hold applies to
//! a new `vnet*` on any bridge of the host, for the fraction of a second until the pass.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use sf_core::desired::L2Network;

/// A bridge port observed on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tap {
    pub name: String,
    /// The tap's own MAC (lowercase), when known.
    pub mac: Option<String>,
    /// The bridge it is enslaved to.
    pub bridge: String,
}

/// What the table does with one tap of a tier in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapFate {
    /// Several ports with the tap's MAC are one NIC's addresses (secondary IPs).
    Pinned {
        mac: String,
        ips: Vec<Ipv4Addr>,
    },
    Stray,
    Unpinned,
}

/// The taps of one tier and their fates, by tap name.
pub type TierTaps = BTreeMap<String, TapFate>;

/// A MAC in canonical form (6 lowercase hex pairs) or None.
pub fn canonical_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| s.to_ascii_lowercase())
}

/// The libvirt tap MAC of a VM MAC: first byte `fe`.
pub fn tap_mac(vm_mac: &str) -> Option<String> {
    let m = canonical_mac(vm_mac)?;
    Some(format!("fe{}", &m[2..]))
}

/// The IPv6 link-local address of a MAC: fe80::/64 with the modified EUI-64 interface id
/// (RFC 4291 appendix A: universal/local bit flipped, ff:fe in the middle), the address a
/// VM's kernel gives itself.
pub fn mac_link_local(mac: &str) -> Option<Ipv6Addr> {
    let m = canonical_mac(mac)?;
    let b: Vec<u8> = m
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    let iid = u64::from_be_bytes([b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]]);
    Some(Ipv6Addr::from((0xfe80u128 << 112) | u128::from(iid)))
}

/// The address SLAAC gives a NIC with `mac` in the /64 `prefix`: the prefix with the MAC's
/// modified EUI-64 interface id (the address CloudStack and Neutron compute for a port).
pub fn mac_slaac(prefix: Ipv6Net, mac: &str) -> Option<Ipv6Addr> {
    let iid = u128::from(mac_link_local(mac)?) & u128::from(u64::MAX);
    let net = u128::from(prefix.network()) & !u128::from(u64::MAX);
    Some(Ipv6Addr::from(net | iid))
}

/// The pinned taps of one dual-stack tier and the /64s of its VPC's dual-stack tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space6 {
    pub taps: Vec<String>,
    pub ranges: Vec<Ipv6Net>,
}

/// Maps the taps of `n`'s bridge to its ports.
pub fn plan(n: &L2Network, taps: &[&Tap]) -> TierTaps {
    let mut by_tap_mac: BTreeMap<String, Vec<(String, Ipv4Addr)>> = BTreeMap::new();
    // A port without a (valid) MAC is not an error (the model allows it), but then a tap
    // no port matches may be that port's: it is left unpinned instead of dropped.
    let mut all_identifiable = true;
    for p in &n.ports {
        let macs = p
            .mac
            .as_deref()
            .and_then(|m| Some((canonical_mac(m)?, tap_mac(m)?)));
        match macs {
            Some((mac, t)) => by_tap_mac.entry(t).or_default().push((mac, p.ip)),
            None => all_identifiable = false,
        }
    }
    let mut out = TierTaps::new();
    for t in taps {
        let found = t
            .mac
            .as_deref()
            .and_then(canonical_mac)
            .and_then(|m| by_tap_mac.get(&m));
        let fate = match found.map(Vec::as_slice) {
            Some(ports) => {
                let mut ips: Vec<Ipv4Addr> = ports.iter().map(|(_, ip)| *ip).collect();
                ips.sort();
                ips.dedup();
                TapFate::Pinned {
                    mac: ports[0].0.clone(),
                    ips,
                }
            }
            None if n.ports.is_empty() || !all_identifiable => TapFate::Unpinned,
            None => TapFate::Stray,
        };
        out.insert(t.name.clone(), fate);
    }
    out
}

pub(crate) fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', ""))
}

/// The pinned taps of one tier and its VPC's address space (its own and its peer tiers'
/// CIDRs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub taps: Vec<String>,
    pub cidrs: Vec<String>,
}

/// The `pin` chain for the pinned taps (jumped to from `forward` by tap name), or None when
/// no tap is pinned. An IPv4 source outside the VPC's tiers passes (a VM may route for
/// others: CloudStack's static routes name VMs as next hops, and the hypervisor is not
/// told which prefixes): inside them it must be the port's own address, so no VM can pass
/// an ACL keyed on another VM's or tier's addresses.
///
/// `v6` are the pinned taps of dual-stack tiers with their IPv6 addresses (the port's own,
/// its MAC's link-local and SLAAC address), `spaces6` their tiers' VPC ranges: their IPv6
/// frames go through [`render_pin6`]'s chain.
pub fn render_pin(
    pinned: &[(String, String, Ipv4Addr)],
    spaces: &[Space],
    v6: &[(String, Vec<Ipv6Addr>)],
    spaces6: &[Space6],
) -> Option<String> {
    if pinned.is_empty() {
        return None;
    }
    let j = |f: &dyn Fn(&(String, String, Ipv4Addr)) -> String| {
        pinned.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let mut macs: Vec<String> = pinned
        .iter()
        .map(|(t, m, _)| format!("{} . {m}", quote(t)))
        .collect();
    macs.dedup();
    let macs = macs.join(", ");
    let arps = j(&|(t, m, ip)| format!("{} . {m} . {ip}", quote(t)));
    let ips = j(&|(t, _, ip)| format!("{} . {ip}", quote(t)));
    let mut c = String::from("\tchain pin {\n");
    let mut r = |s: String| {
        let _ = writeln!(c, "\t\t{s}");
    };
    r(format!(
        "iifname . ether saddr != {{ {macs} }} counter drop comment \"spoofed source MAC\""
    ));
    r(format!(
        "ether type arp iifname . arp saddr ether . arp saddr ip {{ {arps} }} return"
    ));
    // An ARP probe (RFC 5227) has no sender address yet.
    r(format!(
        "ether type arp arp saddr ip 0.0.0.0 iifname . arp saddr ether {{ {macs} }} return"
    ));
    r("ether type arp counter drop comment \"spoofed ARP\"".into());
    r(format!(
        "ether type ip iifname . ip saddr {{ {ips} }} return"
    ));
    // A DHCP request before the VM has its address.
    r("ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 return".into());
    for sp in spaces
        .iter()
        .filter(|s| !s.taps.is_empty() && !s.cidrs.is_empty())
    {
        let taps: Vec<String> = sp.taps.iter().map(|t| quote(t)).collect();
        r(format!(
            "ether type ip iifname {{ {} }} ip saddr != {{ {} }} return",
            taps.join(", "),
            sp.cidrs.join(", ")
        ));
    }
    r("ether type ip counter drop comment \"spoofed IPv4 source\"".into());
    if !v6.is_empty() {
        let taps: Vec<String> = v6.iter().map(|(t, _)| quote(t)).collect();
        r(format!(
            "ether type ip6 iifname {{ {} }} goto pin6",
            taps.join(", ")
        ));
    }
    c.push_str("\t}\n");
    if let Some(p6) = render_pin6(v6, spaces6) {
        c.push_str(&p6);
    }
    Some(c)
}

/// The `pin6` chain: IPv6 from a pinned tap of a dual-stack tier must come from one of the
/// port's addresses (its `ipv6`, its MAC's link-local and SLAAC address) or from `::`, which
/// only duplicate address detection (a neighbour solicitation) and MLD reports use. Neighbour
/// advertisements may only name the port's own addresses as their target, and so may the
/// solicitations of its duplicate address detection (a VM claiming a neighbour's tentative
/// address would stop the neighbour from using it). Ordinary solicitations name the
/// address being resolved, anyone's, and pass. As in IPv4, a source outside the VPC's tiers
/// (their /64s; not link-local) passes, after the ND checks: a VM may route for others (an
/// IPv6 static route names it as next hop); inside them it must be the port's own.
///
/// The SLAAC address is allowed whatever the port names: the router's RAs carry the /64
/// with the autonomous flag, so a VM configured with another static address also holds its
/// SLAAC one and may pick it as source; it is derived from the port's pinned MAC, so no
/// other port can own it.
///
/// The target is matched as raw payload (`@th,64,128`: after type, code, checksum and the
/// 32 reserved/flag bits) because nft 1.0.6 has no `icmpv6 taddr`.
pub fn render_pin6(v6: &[(String, Vec<Ipv6Addr>)], spaces6: &[Space6]) -> Option<String> {
    if v6.is_empty() {
        return None;
    }
    let addrs: Vec<String> = v6
        .iter()
        .flat_map(|(t, a)| a.iter().map(move |ip| format!("{} . {ip}", quote(t))))
        .collect();
    let targets: Vec<String> = v6
        .iter()
        .flat_map(|(t, a)| {
            a.iter()
                .map(move |ip| format!("{} . {:#034x}", quote(t), u128::from(*ip)))
        })
        .collect();
    let (addrs, targets) = (addrs.join(", "), targets.join(", "));
    let spoofed = "counter drop comment \"spoofed IPv6 source\"";
    let target = "counter drop comment \"spoofed ND target\"";
    let mut lines = vec![
        format!("icmpv6 type nd-neighbor-advert iifname . @th,64,128 != {{ {targets} }} {target}"),
        format!("ip6 saddr :: icmpv6 type nd-neighbor-solicit iifname . @th,64,128 != {{ {targets} }} {target}"),
        format!("ip6 saddr :: meta l4proto != ipv6-icmp {spoofed}"),
        format!("ip6 saddr :: icmpv6 type != {{ nd-neighbor-solicit, mld-listener-report, mld2-listener-report }} {spoofed}"),
    ];
    for sp in spaces6.iter().filter(|s| !s.taps.is_empty()) {
        let taps: Vec<String> = sp.taps.iter().map(|t| quote(t)).collect();
        // `::` is outside too: it passed the two rules above, so it is DAD or MLD.
        let inside: Vec<String> = sp
            .ranges
            .iter()
            .map(ToString::to_string)
            .chain(["fe80::/10".to_string()])
            .collect();
        lines.push(format!(
            "iifname {{ {} }} ip6 saddr != {{ {} }} return",
            taps.join(", "),
            inside.join(", ")
        ));
    }
    lines.push(format!(
        "ip6 saddr != :: iifname . ip6 saddr != {{ {addrs} }} {spoofed}"
    ));
    let mut c = String::from("\tchain pin6 {\n");
    for l in lines {
        let _ = writeln!(c, "\t\t{l}");
    }
    c.push_str("\t}\n");
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::LocalPort;

    fn net(ports: &[(&str, &str, Option<&str>)]) -> L2Network {
        L2Network {
            vni: 7,
            tenant: "t".into(),
            vpc: "v".into(),
            network: "n".into(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            ports: ports
                .iter()
                .map(|(n, ip, mac)| LocalPort {
                    name: n.to_string(),
                    ip: ip.parse().unwrap(),
                    mac: mac.map(str::to_string),
                    attach: None,
                })
                .collect(),
            acl: None,
            peer_tiers: vec![],
        }
    }

    fn tap(name: &str, mac: &str) -> Tap {
        Tap {
            name: name.into(),
            mac: Some(mac.into()),
            bridge: "brvx-7".into(),
        }
    }

    #[test]
    fn taps_map_to_ports_by_libvirt_mac() {
        let n = net(&[
            ("a", "10.0.0.11", Some("52:54:00:AA:BB:01")),
            ("b", "10.0.0.12", Some("52:54:00:aa:bb:02")),
            ("c", "10.0.0.13", None),
        ]);
        let (t0, t1, t2) = (
            tap("vnet0", "fe:54:00:aa:bb:01"),
            tap("vnet1", "52:54:00:aa:bb:02"),
            tap("vnet2", "fe:54:00:aa:bb:99"),
        );
        let p = plan(&n, &[&t0, &t1, &t2]);
        assert_eq!(
            p["vnet0"],
            TapFate::Pinned {
                mac: "52:54:00:aa:bb:01".into(),
                ips: vec!["10.0.0.11".parse().unwrap()]
            }
        );
        // Port c has no MAC: a tap no port matches may be c's, so it is left unpinned.
        assert_eq!(p["vnet1"], TapFate::Unpinned);
        assert_eq!(p["vnet2"], TapFate::Unpinned);
        // Every port identifiable: not the libvirt convention (the VM's own MAC on the tap)
        // or an unknown MAC is a stray tap.
        let n = net(&[
            ("a", "10.0.0.11", Some("52:54:00:AA:BB:01")),
            ("b", "10.0.0.12", Some("52:54:00:aa:bb:02")),
        ]);
        let p = plan(&n, &[&t0, &t1, &t2]);
        assert!(matches!(p["vnet0"], TapFate::Pinned { .. }));
        assert_eq!(p["vnet1"], TapFate::Stray);
        assert_eq!(p["vnet2"], TapFate::Stray);
        // Two ports with the same MAC: one NIC with two addresses.
        let n = net(&[
            ("a2", "10.0.0.99", Some("52:54:00:aa:bb:01")),
            ("a", "10.0.0.11", Some("52:54:00:aa:bb:01")),
        ]);
        assert_eq!(
            plan(&n, &[&t0])["vnet0"],
            TapFate::Pinned {
                mac: "52:54:00:aa:bb:01".into(),
                ips: vec!["10.0.0.11".parse().unwrap(), "10.0.0.99".parse().unwrap()]
            }
        );
        // A tier without ports (CloudStack-managed NICs) cannot be pinned.
        let p = plan(&net(&[]), &[&t0]);
        assert_eq!(p["vnet0"], TapFate::Unpinned);
    }

    #[test]
    fn pin_chain_pins_mac_arp_and_ipv4() {
        assert!(render_pin(&[], &[], &[], &[]).is_none());
        let space = Space {
            taps: vec!["vnet0".into(), "vnet1".into()],
            cidrs: vec!["10.0.0.0/24".into(), "10.0.1.0/24".into()],
        };
        let c = render_pin(
            &[
                (
                    "vnet0".into(),
                    "52:54:00:00:00:01".into(),
                    "10.0.0.11".parse().unwrap(),
                ),
                (
                    "vnet1".into(),
                    "52:54:00:00:00:02".into(),
                    "10.0.0.12".parse().unwrap(),
                ),
            ],
            &[space],
            &[],
            &[],
        )
        .unwrap();
        let mac = c
            .find("iifname . ether saddr != { \"vnet0\" . 52:54:00:00:00:01, \"vnet1\" . 52:54:00:00:00:02 } counter drop")
            .unwrap();
        let arp = c.find("ether type arp iifname . arp saddr ether . arp saddr ip { \"vnet0\" . 52:54:00:00:00:01 . 10.0.0.11, ").unwrap();
        let arp_drop = c.find("ether type arp counter drop").unwrap();
        let ip = c
            .find("ether type ip iifname . ip saddr { \"vnet0\" . 10.0.0.11, \"vnet1\" . 10.0.0.12 } return")
            .unwrap();
        let dhcp = c
            .find("ip saddr 0.0.0.0 udp sport 68 udp dport 67 return")
            .unwrap();
        let routed = c
            .find("ether type ip iifname { \"vnet0\", \"vnet1\" } ip saddr != { 10.0.0.0/24, 10.0.1.0/24 } return")
            .unwrap();
        let ip_drop = c.find("ether type ip counter drop").unwrap();
        assert!(mac < arp && arp < arp_drop && arp_drop < ip && ip < dhcp);
        assert!(dhcp < routed && routed < ip_drop);
        // Non-IP, non-ARP frames (IPv6) fall through with the MAC pinned.
        assert!(c
            .trim_end()
            .ends_with("comment \"spoofed IPv4 source\"\n\t}"));
    }

    #[test]
    fn link_local_is_the_modified_eui64_of_the_mac() {
        assert_eq!(
            mac_link_local("52:54:00:AA:bb:0c"),
            Some("fe80::5054:ff:feaa:bb0c".parse().unwrap())
        );
        // The universal/local bit flips both ways (RFC 4291 appendix A).
        assert_eq!(
            mac_link_local("02:5f:00:00:00:01"),
            Some("fe80::5f:ff:fe00:1".parse().unwrap())
        );
        assert_eq!(mac_link_local("52:54:00"), None);
    }

    #[test]
    fn slaac_address_is_the_prefix_with_the_macs_interface_id() {
        let p: Ipv6Net = "fd10:10:0:1::/64".parse().unwrap();
        assert_eq!(
            mac_slaac(p, "52:54:00:aa:bb:0c"),
            Some("fd10:10:0:1:5054:ff:feaa:bb0c".parse().unwrap())
        );
        assert_eq!(mac_slaac(p, "nonsense"), None);
    }

    #[test]
    fn macs_are_validated() {
        assert_eq!(
            canonical_mac("52:54:00:AA:bb:0c").as_deref(),
            Some("52:54:00:aa:bb:0c")
        );
        assert!(canonical_mac("52:54:00:aa:bb").is_none());
        assert!(canonical_mac("52:54:00:aa:bb:0c\" drop").is_none());
        assert_eq!(
            tap_mac("52:54:00:aa:bb:0c").as_deref(),
            Some("fe:54:00:aa:bb:0c")
        );
    }
}
