//! Network links as the agents see them: observed from `ip -j -d link show` / `ip -j -d addr
//! show` (one parser for both: the latter is the former plus each link's addresses), changed
//! with iproute2 commands. Ownership is marked in the kernel itself with the link alias
//! [`OWNER_ALIAS`], so an agent that lost its local state still knows what it created and
//! never touches links it did not (for example bridges CloudStack's KVM agent made).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::{run, DeviceError};

/// ifalias set on every link a StackFabric agent creates.
pub const OWNER_ALIAS: &str = "stackfabric";

/// The parts of a link the agents reason about (every agent: switch, hypervisor, gateway).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    /// "bridge", "vxlan", "veth", "vrf", "dummy", ... (None for plain devices such as lo).
    pub kind: Option<String>,
    pub master: Option<String>,
    /// Carries the [`OWNER_ALIAS`] ifalias: created by StackFabric.
    pub owned: bool,
    pub up: bool,
    /// The link-layer address (`address`), as iproute2 prints it.
    pub mac: Option<String>,
    /// IPv4 addresses; only filled from `ip -j -d addr show` (empty from `link show`).
    pub addrs: Vec<Ipv4Net>,
    pub vxlan: Option<VxlanInfo>,
    /// Bridge-port flags, when the link is enslaved to a bridge.
    pub port_learning: Option<bool>,
    pub port_neigh_suppress: Option<bool>,
    /// Whether the host's IPv6 is on for this link (`net.ipv6.conf.<link>.disable_ipv6` = 0);
    /// None when not read (only the L2 overlay links are) or the kernel has no IPv6.
    pub ipv6_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
}

#[derive(Deserialize)]
struct RawLink {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    master: Option<String>,
    ifalias: Option<String>,
    address: Option<String>,
    linkinfo: Option<RawLinkInfo>,
    #[serde(default)]
    addr_info: Vec<RawAddr>,
}

#[derive(Deserialize)]
struct RawLinkInfo {
    info_kind: Option<String>,
    info_data: Option<serde_json::Value>,
    info_slave_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawAddr {
    family: Option<String>,
    local: Option<String>,
    prefixlen: Option<u8>,
}

impl From<RawLink> for Link {
    fn from(r: RawLink) -> Link {
        let info = r.linkinfo.as_ref();
        let kind = info.and_then(|i| i.info_kind.clone());
        let vxlan = match (kind.as_deref(), info.and_then(|i| i.info_data.as_ref())) {
            (Some("vxlan"), Some(d)) => Some(VxlanInfo {
                vni: d.get("id").and_then(|v| v.as_u64()).unwrap_or(0) as u32,
                local: d
                    .get("local")
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok()),
                port: d.get("port").and_then(|v| v.as_u64()).unwrap_or(0) as u16,
                learning: d.get("learning").and_then(|v| v.as_bool()).unwrap_or(true),
            }),
            _ => None,
        };
        let slave = info.and_then(|i| i.info_slave_data.as_ref());
        let flag = |name: &str| slave.and_then(|s| s.get(name)).and_then(|v| v.as_bool());
        let addrs = r
            .addr_info
            .iter()
            .filter(|a| a.family.as_deref() == Some("inet"))
            .filter_map(|a| {
                let ip: Ipv4Addr = a.local.as_deref()?.parse().ok()?;
                Ipv4Net::new(ip, a.prefixlen?).ok()
            })
            .collect();
        Link {
            port_learning: flag("learning"),
            port_neigh_suppress: flag("neigh_suppress"),
            name: r.ifname,
            ifindex: r.ifindex,
            kind,
            master: r.master,
            owned: r.ifalias.as_deref() == Some(OWNER_ALIAS),
            up: r.flags.iter().any(|f| f == "UP"),
            mac: r.address,
            addrs,
            vxlan,
            ipv6_enabled: None,
        }
    }
}

/// Parses `ip -j -d link show` or `ip -j -d addr show` output (the only parser of either).
pub fn parse_links(json: &str) -> Result<Vec<Link>, String> {
    let raw: Vec<RawLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(raw.into_iter().map(Link::from).collect())
}

/// Every link of the current network namespace; the L2 overlay links (`brvx-*`, `vxlan*`)
/// also with their IPv6 state, so that a link whose IPv6 could not be turned off is retried
/// on the next pass instead of being forgotten.
pub async fn observe() -> Result<Vec<Link>, DeviceError> {
    let out = run("ip", &["-j", "-d", "link", "show"]).await?;
    let mut links = parse_links(&out).map_err(|detail| DeviceError::Parse {
        cmd: "ip -j -d link show".into(),
        detail,
    })?;
    for l in links
        .iter_mut()
        .filter(|l| crate::l2::vni_of(&l.name).is_some())
    {
        l.ipv6_enabled = ipv6_enabled(&l.name);
    }
    Ok(links)
}

/// `Some(true)` when IPv6 is on for `link` in the current network namespace.
pub fn ipv6_enabled(link: &str) -> Option<bool> {
    let v = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6")).ok()?;
    Some(v.trim() == "0")
}

/// IPv4 addresses configured on `dev`.
pub async fn addresses(dev: &str) -> Result<Vec<Ipv4Addr>, DeviceError> {
    let out = run("ip", &["-j", "-4", "addr", "show", "dev", dev]).await?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| DeviceError::Parse {
        cmd: format!("ip -j -4 addr show dev {dev}"),
        detail: e.to_string(),
    })?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| {
            l.get("addr_info")
                .and_then(|a| a.as_array())
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| {
            a.get("local")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse().ok())
        })
        .collect())
}

/// Runs one `ip` command.
pub async fn ip(args: &[&str]) -> Result<(), DeviceError> {
    run("ip", args).await.map(|_| ())
}

/// Runs one `bridge` command.
pub async fn bridge(args: &[&str]) -> Result<(), DeviceError> {
    run("bridge", args).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured with iproute2 6.1 (`ip -j -d link show` / `ip -j -d addr show`) in a scratch
    // namespace: an owned bridge, an owned vxlan enslaved to it with the port flags
    // CloudStack's layout needs, and a veth whose peer is in another namespace.
    const BRIDGE_VXLAN_VETH: &str = include_str!("../testdata/ip-link-bridge-vxlan-veth.json");
    const ADDR_HOST: &str = include_str!("../testdata/ip-addr-host.json");
    const ADDR_NS: &str = include_str!("../testdata/ip-addr-ns.json");
    // VRF and dummy in iproute2 6.1's output format (the build host's kernel has neither
    // module, so these two were written after iproute2's printers, not captured).
    const VRF_DUMMY: &str = include_str!("../testdata/ip-link-vrf-dummy.json");

    fn by_name<'a>(links: &'a [Link], name: &str) -> &'a Link {
        links.iter().find(|l| l.name == name).unwrap()
    }

    #[test]
    fn parses_bridges_vxlans_and_port_flags() {
        let links = parse_links(BRIDGE_VXLAN_VETH).unwrap();
        assert_eq!(links.len(), 4);
        let lo = by_name(&links, "lo");
        assert!(lo.kind.is_none() && !lo.owned && lo.up && lo.master.is_none());
        let br = by_name(&links, "brvx-1000001");
        assert!(br.owned && br.up);
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert_eq!(br.vxlan, None);
        assert_eq!((br.port_learning, br.port_neigh_suppress), (None, None));
        let vx = by_name(&links, "vxlan1000001");
        assert!(vx.owned && vx.up);
        assert_eq!(vx.kind.as_deref(), Some("vxlan"));
        assert_eq!(vx.master.as_deref(), Some("brvx-1000001"));
        assert_eq!(
            vx.vxlan,
            Some(VxlanInfo {
                vni: 1_000_001,
                local: Some("10.255.1.1".parse().unwrap()),
                port: 4789,
                learning: false
            })
        );
        assert_eq!(vx.port_learning, Some(false));
        assert_eq!(vx.port_neigh_suppress, Some(true));
        assert!(vx.addrs.is_empty(), "link show has no addresses");
    }

    #[test]
    fn parses_veths_with_their_addresses() {
        let links = parse_links(BRIDGE_VXLAN_VETH).unwrap();
        let gx = by_name(&links, "gx7");
        assert_eq!(gx.kind.as_deref(), Some("veth"));
        assert!(gx.owned && gx.up && gx.master.is_none());
        assert_eq!(gx.mac.as_deref(), Some("be:e9:21:d0:60:d1"));
        // The same links from `addr show`, with their IPv4 addresses (IPv6 ignored).
        let host = parse_links(ADDR_HOST).unwrap();
        assert_eq!(host.len(), 4);
        assert_eq!(
            by_name(&host, "gx7").addrs,
            vec!["198.18.0.14/31".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(
            by_name(&host, "lo").addrs,
            vec![
                "127.0.0.1/8".parse::<Ipv4Net>().unwrap(),
                "10.255.1.1/32".parse().unwrap()
            ]
        );
        assert_eq!(
            by_name(&host, "vxlan1000001").vxlan.as_ref().unwrap().vni,
            1_000_001
        );
        let ns = parse_links(ADDR_NS).unwrap();
        let tr = by_name(&ns, "transit");
        assert_eq!(tr.kind.as_deref(), Some("veth"));
        assert!(!tr.owned && tr.up);
        assert_eq!(tr.mac.as_deref(), Some("02:5f:00:00:00:07"));
        assert_eq!(tr.addrs, vec!["198.18.0.15/31".parse::<Ipv4Net>().unwrap()]);
        assert!(!by_name(&ns, "lo").up);
    }

    #[test]
    fn parses_vrfs_and_dummies() {
        let links = parse_links(VRF_DUMMY).unwrap();
        let vrf = by_name(&links, "vrf-blue");
        assert_eq!(vrf.kind.as_deref(), Some("vrf"));
        assert!(vrf.owned && vrf.up && vrf.vxlan.is_none());
        let d0 = by_name(&links, "dummy0");
        assert_eq!(d0.kind.as_deref(), Some("dummy"));
        assert_eq!(d0.master.as_deref(), Some("vrf-blue"));
        // A VRF port has no bridge-port flags.
        assert_eq!((d0.port_learning, d0.port_neigh_suppress), (None, None));
        let d1 = by_name(&links, "dummy1");
        assert!(!d1.up && !d1.owned && d1.master.is_none());
    }

    #[test]
    fn refuses_what_is_not_a_link_list() {
        assert!(parse_links("").is_err());
        assert!(parse_links("{}").is_err());
        assert_eq!(parse_links("[]").unwrap(), vec![]);
    }
}
