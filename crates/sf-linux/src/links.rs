//! Network links as the agents see them: observed from `ip -j -d link show` / `ip -j addr`,
//! changed with iproute2 commands. Ownership is marked in the kernel itself with the link alias
//! [`OWNER_ALIAS`], so an agent that lost its local state still knows what it created and
//! never touches links it did not (for example bridges CloudStack's KVM agent made).

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::{run, DeviceError};

/// ifalias set on every link a StackFabric agent creates.
pub const OWNER_ALIAS: &str = "stackfabric";

/// The parts of a link the agents reason about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    /// "bridge", "vxlan", "veth", ... (None for plain devices such as lo).
    pub kind: Option<String>,
    pub master: Option<String>,
    pub owned: bool,
    pub up: bool,
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
    linkinfo: Option<RawLinkInfo>,
}

#[derive(Deserialize)]
struct RawLinkInfo {
    info_kind: Option<String>,
    info_data: Option<serde_json::Value>,
    info_slave_data: Option<serde_json::Value>,
}

/// Parses `ip -j -d link show` output.
pub fn parse_links(json: &str) -> Result<Vec<Link>, String> {
    let raw: Vec<RawLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(raw
        .into_iter()
        .map(|r| {
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
            Link {
                name: r.ifname,
                ifindex: r.ifindex,
                kind,
                master: r.master,
                owned: r.ifalias.as_deref() == Some(OWNER_ALIAS),
                up: r.flags.iter().any(|f| f == "UP"),
                vxlan,
                port_learning: flag("learning"),
                port_neigh_suppress: flag("neigh_suppress"),
                ipv6_enabled: None,
            }
        })
        .collect())
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

    const SAMPLE: &str = r#"[
      {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"]},
      {"ifindex":2,"ifname":"brvx-1000001","flags":["BROADCAST","MULTICAST","UP"],"ifalias":"stackfabric",
       "linkinfo":{"info_kind":"bridge","info_data":{"stp_state":0}}},
      {"ifindex":3,"ifname":"vxlan1000001","flags":["BROADCAST","UP"],"master":"brvx-1000001",
       "linkinfo":{"info_kind":"vxlan","info_data":{"id":1000001,"local":"10.255.1.1","port":4789,"learning":false},
                   "info_slave_kind":"bridge","info_slave_data":{"learning":false,"neigh_suppress":true}}}
    ]"#;

    #[test]
    fn parses_bridges_vxlans_and_port_flags() {
        let links = parse_links(SAMPLE).unwrap();
        assert_eq!(links.len(), 3);
        assert!(links[1].owned && links[1].up);
        assert_eq!(links[1].kind.as_deref(), Some("bridge"));
        let vx = &links[2];
        assert!(!vx.owned);
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
    }
}
