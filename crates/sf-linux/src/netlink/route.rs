//! IPv4 routes: the main table as one RTM_GETROUTE dump (what `ip -j -4 route show table
//! main` prints).

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, NetlinkError};

pub use netlink_packet_route::route::{RouteProtocol, RouteType};

/// The main routing table.
pub const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// One IPv4 route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// Output interface (none for blackholes and multipath routes).
    pub oif: Option<u32>,
    pub protocol: RouteProtocol,
    pub kind: RouteType,
    pub table: u32,
}

/// Every IPv4 route of table `table`. The dump covers all tables (the kernel filters by
/// table only with strict checking on); the others are dropped here.
pub async fn dump_v4(nl: &Netlink, table: u32) -> Result<Vec<RouteV4>, NetlinkError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let msgs: Vec<RouteMessage> = nl.handle().route().get(msg).execute().try_collect().await?;
    Ok(msgs
        .iter()
        .filter_map(parse_v4)
        .filter(|r| r.table == table)
        .collect())
}

/// One route; None for a non-IPv4 message.
pub fn parse_v4(m: &RouteMessage) -> Option<RouteV4> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut dst = std::net::Ipv4Addr::UNSPECIFIED;
    let mut r = RouteV4 {
        dst: Ipv4Net::default(),
        gateway: None,
        oif: None,
        protocol: m.header.protocol,
        kind: m.header.kind,
        table: m.header.table as u32,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => r.gateway = Some(*ip),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            // Tables above 255 are only in RTA_TABLE.
            RouteAttribute::Table(t) => r.table = *t,
            _ => {}
        }
    }
    r.dst = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
    Some(r)
}

/// One IPv6 route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV6 {
    pub dst: ipnet::Ipv6Net,
    pub gateway: Option<std::net::Ipv6Addr>,
    /// Output interface (none for blackholes and multipath routes).
    pub oif: Option<u32>,
    pub protocol: RouteProtocol,
    pub kind: RouteType,
    pub table: u32,
}

/// One route; None for a non-IPv6 message.
pub fn parse_v6(m: &RouteMessage) -> Option<RouteV6> {
    if m.header.address_family != AddressFamily::Inet6 {
        return None;
    }
    let mut dst = std::net::Ipv6Addr::UNSPECIFIED;
    let mut r = RouteV6 {
        dst: ipnet::Ipv6Net::default(),
        gateway: None,
        oif: None,
        protocol: m.header.protocol,
        kind: m.header.kind,
        table: m.header.table as u32,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => r.gateway = Some(*ip),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) => r.table = *t,
            _ => {}
        }
    }
    r.dst = ipnet::Ipv6Net::new(dst, m.header.destination_prefix_length).ok()?;
    Some(r)
}

/// The metric of a route (RTA_PRIORITY; 0 when absent), part of its identity in a table.
pub fn priority_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}
