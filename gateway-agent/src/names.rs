//! Names and addresses of everything the gateway agent creates, all derived from the VPC
//! router's `id` (and a tier's VNI), so every gateway node computes the same ones and a
//! restarted agent recognises its own objects in the kernel.
//!
//! | object                          | namespace        | name                  |
//! |---------------------------------|------------------|-----------------------|
//! | VPC router                      | -                | `<prefix><id>`        |
//! | tier veth, host end (in brvx)   | gateway host     | `g<id>v<vni>`         |
//! | tier veth, router end           | VPC              | `t<vni>`              |
//! | transit veth, host end          | gateway host     | `gx<id>`              |
//! | transit veth, router end        | VPC              | `transit`             |
//! | Direct Connect veth, host end   | gateway host     | `g<id>d<vni>`         |
//! | Direct Connect veth, router end | VPC              | `d<vni>`              |
//! | per-VPC FRR (Direct Connect)    | VPC              | `<state>/vpc-frr/<ns>`|
//!
//! Host-end names are at most 15 characters (IFNAMSIZ-1) for every id ≤ [`MAX_ID`] and every
//! 24-bit VNI: `g` + 5 digits + `v` (or `d`) + 8 digits. The VNI, not a tier index, is in the name, so
//! adding or removing a tier never renames (recreates) another tier's link.
//!
//! Transit addressing: VPC `id` gets the /31 `198.18.0.0 + 2·id` out of 198.18.0.0/15
//! (RFC 2544 benchmarking space: never routed on the internet and not used by CloudStack,
//! which takes 169.254.0.0/16 for its system VMs' link-local control network). The host end
//! holds the even address, the router end the odd one; ids 0..=65535 fit exactly. These
//! addresses never leave the gateway: FRR announces only the public /32s.

use std::net::Ipv4Addr;

/// Largest VPC router id the naming and transit addressing support.
pub const MAX_ID: u32 = 65_535;
/// Name of the transit link inside every VPC namespace.
pub const TRANSIT_NS: &str = "transit";
/// Base of the transit /31s.
pub const TRANSIT_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

pub fn netns_name(prefix: &str, id: u32) -> String {
    format!("{prefix}{id}")
}

/// The router id a namespace name denotes, if it is one of ours (canonical decimal only, so
/// `sfvpc-007` is not mistaken for router 7).
pub fn netns_id(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let id: u32 = rest.parse().ok()?;
    (id.to_string() == rest).then_some(id)
}

pub fn tier_host(id: u32, vni: u32) -> String {
    format!("g{id}v{vni}")
}

pub fn tier_ns(vni: u32) -> String {
    format!("t{vni}")
}

/// Host end of the veth joining router `id` to Direct Connect segment `brvx-<vni>`.
pub fn dc_host(id: u32, vni: u32) -> String {
    format!("g{id}d{vni}")
}

/// Router end of a Direct Connect veth.
pub fn dc_ns(vni: u32) -> String {
    format!("d{vni}")
}

pub fn transit_host(id: u32) -> String {
    format!("gx{id}")
}

/// A host-namespace link name of ours, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLink {
    Tier { id: u32, vni: u32 },
    Transit { id: u32 },
    Dc { id: u32, vni: u32 },
}

impl HostLink {
    pub fn id(&self) -> u32 {
        match self {
            HostLink::Tier { id, .. } | HostLink::Transit { id } | HostLink::Dc { id, .. } => *id,
        }
    }
    /// The VNI a tier or Direct Connect link is named for.
    pub fn vni(&self) -> Option<u32> {
        match self {
            HostLink::Tier { vni, .. } | HostLink::Dc { vni, .. } => Some(*vni),
            HostLink::Transit { .. } => None,
        }
    }
}

fn canonical(s: &str) -> Option<u32> {
    let v: u32 = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

pub fn parse_host_link(name: &str) -> Option<HostLink> {
    if let Some(rest) = name.strip_prefix("gx") {
        return canonical(rest).map(|id| HostLink::Transit { id });
    }
    let rest = name.strip_prefix('g')?;
    if let Some((id, vni)) = rest.split_once('v') {
        return Some(HostLink::Tier {
            id: canonical(id)?,
            vni: canonical(vni)?,
        });
    }
    let (id, vni) = rest.split_once('d')?;
    Some(HostLink::Dc {
        id: canonical(id)?,
        vni: canonical(vni)?,
    })
}

/// The VNI of a router-side Direct Connect link name `d<vni>`.
pub fn parse_dc_ns(name: &str) -> Option<u32> {
    name.strip_prefix('d').and_then(canonical)
}

/// The VNI of a router-side tier link name `t<vni>`.
pub fn parse_tier_ns(name: &str) -> Option<u32> {
    name.strip_prefix('t').and_then(canonical)
}

/// (host end, router end) addresses of the transit /31 of VPC `id`; None above [`MAX_ID`].
pub fn transit_addrs(id: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if id > MAX_ID {
        return None;
    }
    let host = u32::from(TRANSIT_BASE) + 2 * id;
    Some((Ipv4Addr::from(host), Ipv4Addr::from(host + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_fit_ifnamsiz() {
        assert_eq!(netns_name("sfvpc-", 7), "sfvpc-7");
        assert_eq!(netns_id("sfvpc-", "sfvpc-7"), Some(7));
        assert_eq!(netns_id("sfvpc-", "sfvpc-007"), None);
        assert_eq!(netns_id("sfvpc-", "other-7"), None);
        assert_eq!(netns_id("sfvpc-", "sfvpc-x"), None);
        let worst = tier_host(MAX_ID, 16_777_215);
        assert_eq!(worst, "g65535v16777215");
        assert!(worst.len() <= 15);
        assert!(transit_host(MAX_ID).len() <= 15);
        assert_eq!(
            parse_host_link("g7v1000001"),
            Some(HostLink::Tier {
                id: 7,
                vni: 1_000_001
            })
        );
        assert_eq!(parse_host_link("gx7"), Some(HostLink::Transit { id: 7 }));
        assert_eq!(parse_host_link("gx07"), None);
        assert_eq!(parse_host_link("gretap0"), None);
        assert_eq!(parse_host_link("g7v"), None);
        assert_eq!(parse_tier_ns("t1000001"), Some(1_000_001));
        assert_eq!(parse_tier_ns("transit"), None);
        let worst = dc_host(MAX_ID, 16_777_215);
        assert_eq!(worst, "g65535d16777215");
        assert_eq!(
            parse_host_link("g7d1000009"),
            Some(HostLink::Dc {
                id: 7,
                vni: 1_000_009
            })
        );
        assert_eq!(parse_host_link("g7d"), None);
        assert_eq!(parse_dc_ns(&dc_ns(1_000_009)), Some(1_000_009));
        assert_eq!(parse_dc_ns("t1000009"), None);
        assert_eq!(parse_tier_ns(&dc_ns(1_000_009)), None);
    }

    #[test]
    fn transit_31s_are_disjoint_and_cover_all_ids() {
        assert_eq!(
            transit_addrs(0),
            Some(("198.18.0.0".parse().unwrap(), "198.18.0.1".parse().unwrap()))
        );
        assert_eq!(
            transit_addrs(7),
            Some((
                "198.18.0.14".parse().unwrap(),
                "198.18.0.15".parse().unwrap()
            ))
        );
        assert_eq!(
            transit_addrs(MAX_ID),
            Some((
                "198.19.255.254".parse().unwrap(),
                "198.19.255.255".parse().unwrap()
            ))
        );
        assert_eq!(transit_addrs(MAX_ID + 1), None);
        let (h, n) = transit_addrs(300).unwrap();
        assert_eq!(u32::from(h) % 2, 0);
        assert_eq!(u32::from(n), u32::from(h) + 1);
        let next = transit_addrs(301).unwrap().0;
        assert_eq!(u32::from(next), u32::from(n) + 1);
    }
}
