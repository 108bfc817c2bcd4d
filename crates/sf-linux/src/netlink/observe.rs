//! Observation through netlink: one RTM_GETLINK dump parsed into the same [`Link`] model the
//! `ip -j -d link show` parser fills (kind, master, ownership alias, up, MAC, VXLAN data,
//! bridge-port flags), with the overlay links' IPv6 state read from the same dump
//! (IFLA_AF_SPEC / AF_INET6 / IFLA_INET6_CONF), so no per-link file read is needed; and the
//! IPv4 addresses of one link, or of all links (the `ip -j -d addr show` view), from an
//! RTM_GETADDR dump.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, InfoBridgePort, InfoData, InfoPortData, InfoVxlan, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::AddressFamily;

use super::{Netlink, NetlinkError};
use crate::links::{Link, VxlanInfo, OWNER_ALIAS};

/// Every link of the namespace, in one dump. Without the counters (RTEXT_FILTER_SKIP_STATS:
/// no IFLA_STATS*, no IPv6/ICMPv6 statistics), which are most of a link's message and of
/// no use here: at 10,000 links they are megabytes per dump.
pub async fn links(nl: &Netlink) -> Result<Vec<Link>, NetlinkError> {
    Ok(parse_links(&link_messages(nl).await?))
}

/// The link dump of [`links`], unparsed (a mirror keeps the messages' own view).
pub async fn link_messages(nl: &Netlink) -> Result<Vec<LinkMessage>, NetlinkError> {
    Ok(nl
        .handle()
        .link()
        .get()
        .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
        .execute()
        .try_collect()
        .await?)
}

/// The parsed links of a dump; masters resolved from ifindex to name within it.
pub fn parse_links(msgs: &[LinkMessage]) -> Vec<Link> {
    let names: HashMap<u32, String> = msgs
        .iter()
        .filter_map(|m| name_of(m).map(|n| (m.header.index, n.to_string())))
        .collect();
    msgs.iter().filter_map(|m| parse_link(m, &names)).collect()
}

fn name_of(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// One link; None for a message without a name (never sent by the kernel).
pub fn parse_link(m: &LinkMessage, names: &HashMap<u32, String>) -> Option<Link> {
    parse_link_with(m, |i| names.get(&i).cloned())
}

/// One link, its master's name resolved by `master_name` (a dump's own table, or the link
/// view the events keep up to date).
pub fn parse_link_with(
    m: &LinkMessage,
    master_name: impl Fn(u32) -> Option<String>,
) -> Option<Link> {
    let mut l = Link {
        name: name_of(m)?.to_string(),
        ifindex: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    let mut ipv6_disabled = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfAlias(s) => l.owned = s == OWNER_ALIAS,
            LinkAttribute::Controller(i) => l.master = master_name(*i),
            LinkAttribute::Address(mac) => l.mac = Some(format_mac(mac)),
            LinkAttribute::LinkInfo(infos) => parse_info(&mut l, infos),
            LinkAttribute::AfSpecUnspec(specs) => ipv6_disabled = ipv6_disabled_of(specs),
            _ => {}
        }
    }
    // As the iproute2 observer does: the IPv6 state only of the overlay links.
    if crate::l2::vni_of(&l.name).is_some() {
        l.ipv6_enabled = ipv6_disabled.map(|d| !d);
    }
    Some(l)
}

fn parse_info(l: &mut Link, infos: &[LinkInfo]) {
    for i in infos {
        match i {
            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
            LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = Some(vxlan_info(v)),
            LinkInfo::PortData(InfoPortData::BridgePort(p)) => {
                for f in p {
                    match f {
                        InfoBridgePort::Learning(b) => l.port_learning = Some(*b),
                        InfoBridgePort::NeighSupress(b) => l.port_neigh_suppress = Some(*b),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn vxlan_info(v: &[InfoVxlan]) -> VxlanInfo {
    // The kernel always sends IFLA_VXLAN_LEARNING; iproute2's default when absent is on.
    let mut x = VxlanInfo {
        vni: 0,
        local: None,
        port: 0,
        learning: true,
    };
    for a in v {
        match a {
            InfoVxlan::Id(id) => x.vni = *id,
            InfoVxlan::Local(ip) => x.local = Some(*ip),
            InfoVxlan::Port(p) => x.port = *p,
            InfoVxlan::Learning(b) => x.learning = *b,
            _ => {}
        }
    }
    x
}

/// `disable_ipv6` of the link from its AF_INET6 devconf; None without IPv6 on the link.
fn ipv6_disabled_of(specs: &[AfSpecUnspec]) -> Option<bool> {
    specs.iter().find_map(|s| match s {
        AfSpecUnspec::Inet6(v6) => v6.iter().find_map(|a| match a {
            AfSpecInet6::DevConf(c) => Some(c.disable_ipv6 != 0),
            _ => None,
        }),
        _ => None,
    })
}

/// A link-layer address as iproute2 prints it (`02:00:00:00:00:01`).
fn format_mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// IPv4 addresses of the link with ifindex `index`.
pub async fn addresses_v4(nl: &Netlink, index: u32) -> Result<Vec<Ipv4Addr>, NetlinkError> {
    let msgs: Vec<_> = nl
        .handle()
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .flat_map(|m| m.attributes.iter())
        .filter_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
        .collect())
}

/// Every IPv4 address of the namespace in one RTM_GETADDR dump, by link ifindex, in the
/// kernel's order (the order `ip addr show` prints).
pub async fn addresses_v4_by_link(
    nl: &Netlink,
) -> Result<HashMap<u32, Vec<Ipv4Net>>, NetlinkError> {
    let msgs: Vec<_> = nl.handle().address().get().execute().try_collect().await?;
    let mut by_link: HashMap<u32, Vec<Ipv4Net>> = HashMap::new();
    for m in msgs
        .iter()
        .filter(|m| m.header.family == AddressFamily::Inet)
    {
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(net) = local.and_then(|ip| Ipv4Net::new(ip, m.header.prefix_len).ok()) {
            by_link.entry(m.header.index).or_default().push(net);
        }
    }
    Ok(by_link)
}

/// Every link with its IPv4 addresses, as `ip -j -d addr show` and the iproute2 parser give
/// them (so without the IPv6 state, which only the L2 observer reads): one link dump and one
/// address dump, one after the other (a netlink socket runs one dump at a time: a second
/// one started meanwhile fails with EBUSY).
pub async fn links_with_addresses(nl: &Netlink) -> Result<Vec<Link>, NetlinkError> {
    let links = links(nl).await?;
    let mut addrs = addresses_v4_by_link(nl).await?;
    Ok(links
        .into_iter()
        .map(|mut l| {
            l.addrs = addrs.remove(&l.ifindex).unwrap_or_default();
            l.ipv6_enabled = None;
            l
        })
        .collect())
}
