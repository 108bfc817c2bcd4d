//! The netlink executor of the router planner's [`Action`]s: each action is one or a few
//! rtnetlink requests on the long-lived sockets of [`crate::kernel`] (the host's, or the VPC
//! namespace's), not an `ip` process. What stays a process, each under sf-linux's timeout:
//! - `ip netns add` / `ip netns del`: a named namespace is a bind mount under /run/netns made
//!   by a process that unshares; netlink has no request for it, and doing the mount here
//!   would re-implement iproute2's mount-propagation setup for one call per router's life;
//! - `nft -f` (inside the namespace): nftables stays one atomic transaction per change.
//!
//! A router's plan depends step on step (a veth before its address, an address before the
//! route through it), and a failed step stops the router's remaining ones
//! ([`sf_linux::converge::OnFailure::Stop`]), so an action's requests are pipelined (sent
//! back to back, acks awaited together) but actions are not pipelined across each other:
//! a request sent behind a failed one would still be applied. Each request is a round trip
//! of tens of µs on an open socket instead of a fork/exec of `ip` (a few ms).
//!
//! The former executor ([`crate::device::execute`], `ip` processes) stays selectable with
//! `SF_GW_EXECUTOR=iproute2` only as the baseline of `deploy/bench.sh gw`.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};
use netlink_packet_core::NLM_F_REQUEST;
use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute};
use netlink_packet_route::route::{RouteProtocol, RouteScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use sf_linux::links::OWNER_ALIAS;
use sf_linux::netlink::l2::index_of;
use sf_linux::netlink::{link, netns, port, Netlink, Request};
use sf_linux::{run, DeviceError};

use crate::kernel::Kernel;
use crate::plan::{Action, Route};
use crate::plan6::Route6;

/// Environment variable selecting the former `ip` executor (`iproute2`); bench baseline only.
pub const EXECUTOR_ENV: &str = "SF_GW_EXECUTOR";

/// Whether this process runs the former `ip` executor (read once).
pub fn iproute2_selected() -> bool {
    static SEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEL.get_or_init(|| std::env::var(EXECUTOR_ENV).is_ok_and(|v| v == "iproute2"))
}

/// One planned action bound to the sockets that run it: the [`sf_linux::converge::Step`]
/// the dataplane executes.
#[derive(Debug)]
pub struct Exec {
    pub action: Action,
    kernel: Arc<Kernel>,
    iproute2: bool,
}

impl Exec {
    /// `action` run through netlink on `kernel`'s sockets (or by `ip` processes when the
    /// former executor is selected, see [`iproute2_selected`]).
    pub fn new(action: Action, kernel: &Arc<Kernel>) -> Self {
        Exec {
            action,
            kernel: kernel.clone(),
            iproute2: iproute2_selected(),
        }
    }

    /// `action` through netlink (`iproute2` false) or `ip` processes, whatever the
    /// environment says (tests and the bench run both in one process).
    pub fn with(action: Action, kernel: &Arc<Kernel>, iproute2: bool) -> Self {
        Exec {
            iproute2,
            ..Exec::new(action, kernel)
        }
    }

    /// Binds every action of a plan.
    pub fn all(actions: Vec<Action>, kernel: &Arc<Kernel>) -> Vec<Exec> {
        actions.into_iter().map(|a| Exec::new(a, kernel)).collect()
    }
}

impl sf_linux::converge::Step for Exec {
    fn describe(&self) -> String {
        sf_linux::converge::Step::describe(&self.action)
    }
    async fn execute(&self) -> Result<(), DeviceError> {
        // The former executor is the IPv4 baseline of the bench: IPv6 always takes netlink.
        if self.iproute2 && !self.action.is_ipv6() {
            crate::device::execute(&self.action).await
        } else {
            execute(&self.kernel, &self.action).await
        }
    }
}

/// Wraps a message into a request with `flags` (NLM_F_REQUEST | NLM_F_ACK are added).
fn request(msg: RouteNetlinkMessage, flags: u16) -> Request {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    req
}

/// The socket of namespace `ns` (the host's for None).
fn socket(k: &Kernel, ns: Option<&str>) -> Result<Netlink, DeviceError> {
    match ns {
        None => k.host(),
        Some(n) => Ok(k.ns(n)?.nl.clone()),
    }
}

/// Runs `requests` (one action's) in one pipeline on the socket of `ns`; the first failure
/// names `op`. A failure other than the kernel's refusal drops the namespace's sockets.
async fn send(
    k: &Kernel,
    ns: Option<&str>,
    op: &str,
    requests: Vec<Request>,
) -> Result<(), DeviceError> {
    let nl = socket(k, ns)?;
    for r in nl.pipeline(requests).await {
        if let Err(e) = r {
            if let (Some(n), None) = (ns, e.errno()) {
                k.forget(n);
            }
            return Err(e.on(op));
        }
    }
    Ok(())
}

/// The ifindex of `dev` in namespace `ns`.
async fn index(k: &Kernel, ns: Option<&str>, dev: &str) -> Result<u32, DeviceError> {
    let nl = socket(k, ns)?;
    index_of(&nl, dev)
        .await
        .map_err(|e| e.on(format!("find link {dev}")))
}

/// RTM_SETLINK marking `link` ours (ifalias) with IPv6 address generation off, as
/// `ip link set dev LINK alias stackfabric addrgenmode none` does. The kernel ignores both
/// in the RTM_NEWLINK that creates a link (checked on 6.18), so this is the request right
/// after the creation, sent only once the creation succeeded.
pub fn mark_owned(link: &str) -> Request {
    let mut msg = LinkUnspec::new_with_name(link).build();
    msg.attributes
        .push(LinkAttribute::IfAlias(OWNER_ALIAS.to_string()));
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    request(RouteNetlinkMessage::SetLink(msg), 0)
}

/// RTM_NEWLINK creating veth `host` here with its peer `peer` created directly in the
/// namespace open at `ns_fd` (IFLA_NET_NS_FD in the peer's message).
pub fn add_veth(host: &str, peer: &str, ns_fd: i32) -> Request {
    let mut msg = LinkVeth::new(host, peer).build();
    for a in msg.attributes.iter_mut() {
        if let LinkAttribute::LinkInfo(infos) = a {
            for i in infos.iter_mut() {
                if let netlink_packet_route::link::LinkInfo::Data(
                    netlink_packet_route::link::InfoData::Veth(
                        netlink_packet_route::link::InfoVeth::Peer(p),
                    ),
                ) = i
                {
                    p.attributes.push(LinkAttribute::NetNsFd(ns_fd));
                }
            }
        }
    }
    request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
}

/// RTM_NEWADDR / RTM_DELADDR of `addr` on the link with ifindex `index`.
pub fn address(index: u32, addr: Ipv4Net, add: bool) -> Request {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = addr.prefix_len();
    msg.header.index = index;
    let ip = IpAddr::V4(addr.addr());
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    // No broadcast address: `ip addr add` without `brd` sets none either.
    if add {
        request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        request(RouteNetlinkMessage::DelAddress(msg), 0)
    }
}

/// RTM_NEWROUTE (create or replace, `ip route replace`) or RTM_DELROUTE of `r` in the main
/// table, output device `oif`. As `ip` does: protocol boot, scope link for a route without a
/// gateway; a deletion matches any protocol and scope.
pub fn route(r: &Route, oif: Option<u32>, replace: bool) -> Request {
    let mut b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
        .destination_prefix(r.dst.addr(), r.dst.prefix_len());
    if let Some(g) = r.via {
        b = b.gateway(g);
    }
    if let Some(i) = oif {
        b = b.output_interface(i);
    }
    if replace {
        let scope = match r.via {
            Some(_) => RouteScope::Universe,
            None => RouteScope::Link,
        };
        let msg = b.protocol(RouteProtocol::Boot).scope(scope).build();
        request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    } else {
        let mut msg = b.scope(RouteScope::NoWhere).build();
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = netlink_packet_route::route::RouteType::Unspec;
        request(RouteNetlinkMessage::DelRoute(msg), 0)
    }
}

/// RTM_NEWADDR (with `nodad`) / RTM_DELADDR of IPv6 `addr` on the link with ifindex `index`.
pub fn address6(index: u32, addr: Ipv6Net, add: bool) -> Request {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.prefix_len = addr.prefix_len();
    msg.header.index = index;
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V6(addr.addr())));
    if add {
        // Both places, as `ip addr add … nodad` sends it (IFA_FLAGS wins on new kernels).
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        request(RouteNetlinkMessage::DelAddress(msg), 0)
    }
}

/// RTM_NEWROUTE (replace) or RTM_DELROUTE of IPv6 route `r` in the main table, as
/// [`route`] does for IPv4.
pub fn route6(r: &Route6, oif: Option<u32>, replace: bool) -> Request {
    let mut b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
        .destination_prefix(r.dst.addr(), r.dst.prefix_len());
    if let Some(g) = r.via {
        b = b.gateway(g);
    }
    if let Some(i) = oif {
        b = b.output_interface(i);
    }
    if replace {
        let msg = b
            .protocol(RouteProtocol::Boot)
            .scope(RouteScope::Universe)
            .build();
        request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    } else {
        let mut msg = b.scope(RouteScope::NoWhere).build();
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = netlink_packet_route::route::RouteType::Unspec;
        request(RouteNetlinkMessage::DelRoute(msg), 0)
    }
}

/// The IPv6 actions (see [`crate::plan6`]).
async fn execute6(k: &Kernel, a: &Action) -> Result<(), DeviceError> {
    match a {
        Action::SetForwarding6 { ns: None } => std::fs::write(crate::kernel::IP6_FORWARD, b"1\n")
            .map_err(|source| DeviceError::Spawn {
                cmd: format!("write {}", crate::kernel::IP6_FORWARD),
                source,
            }),
        Action::SetForwarding6 { ns: Some(ns) } => k.ns(ns)?.set_forwarding6(),
        Action::AddAddr6 { ns, dev, addr } | Action::DelAddr6 { ns, dev, addr } => {
            let add = matches!(a, Action::AddAddr6 { .. });
            let i = index(k, ns.as_deref(), dev).await?;
            let op = format!("{} {addr} on {dev}", if add { "add" } else { "delete" });
            send(k, ns.as_deref(), &op, vec![address6(i, *addr, add)]).await
        }
        Action::ReplaceRoute6 { ns, route: r } | Action::DelRoute6 { ns, route: r } => {
            let replace = matches!(a, Action::ReplaceRoute6 { .. });
            let oif = match &r.dev {
                Some(d) => Some(index(k, ns.as_deref(), d).await?),
                None => None,
            };
            let op = format!(
                "{} route {}",
                if replace { "replace" } else { "delete" },
                r.dst
            );
            send(k, ns.as_deref(), &op, vec![route6(r, oif, replace)]).await
        }
        _ => unreachable!("not an IPv6 action: {a:?}"),
    }
}

/// RTM_SETLINK setting the MAC address of `link`.
fn set_mac(link: &str, mac: &str) -> Result<Request, DeviceError> {
    let bytes: Result<Vec<u8>, _> = mac.split(':').map(|h| u8::from_str_radix(h, 16)).collect();
    match bytes {
        Ok(b) if b.len() == 6 => Ok(request(
            RouteNetlinkMessage::SetLink(LinkUnspec::new_with_name(link).address(b).build()),
            0,
        )),
        _ => Err(DeviceError::Parse {
            cmd: format!("set address of {link}"),
            detail: format!("not a MAC address: {mac}"),
        }),
    }
}

/// Runs one planned action through netlink (see the module docs).
pub async fn execute(k: &Kernel, a: &Action) -> Result<(), DeviceError> {
    match a {
        Action::AddNetns { ns } => {
            run("ip", &["netns", "add", ns]).await?;
            send(
                k,
                Some(ns),
                &format!("set lo up in {ns}"),
                vec![link::set_up("lo")],
            )
            .await
        }
        Action::DelNetns { ns } => {
            // Our sockets in it would keep the namespace alive after the unmount.
            k.forget(ns);
            run("ip", &["netns", "del", ns]).await.map(|_| ())
        }
        Action::SetForwarding { ns: None } => {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1\n").map_err(|source| {
                DeviceError::Spawn {
                    cmd: "write /proc/sys/net/ipv4/ip_forward".into(),
                    source,
                }
            })
        }
        Action::SetForwarding { ns: Some(ns) } => k.ns(ns)?.set_forwarding(),
        Action::AddVeth { host, peer, ns } => add_veth_pair(k, host, peer, ns).await,
        Action::DelLink { ns, link } => {
            send(
                k,
                ns.as_deref(),
                &format!("delete {link}"),
                vec![link::delete(link)],
            )
            .await
        }
        Action::SetMaster { link, master } => {
            let m = index(k, None, master).await?;
            let op = format!("set master of {link} to {master}");
            send(k, None, &op, vec![port::set_master(link, m)]).await
        }
        Action::SetMac { ns, link, mac } => {
            let op = format!("set address of {link} to {mac}");
            send(k, Some(ns), &op, vec![set_mac(link, mac)?]).await
        }
        Action::SetUp { ns, link } => {
            send(
                k,
                ns.as_deref(),
                &format!("set {link} up"),
                vec![link::set_up(link)],
            )
            .await
        }
        Action::SetDown { link } => {
            send(
                k,
                None,
                &format!("set {link} down"),
                vec![link::set_down(link)],
            )
            .await
        }
        Action::AddAddr { ns, dev, addr } | Action::DelAddr { ns, dev, addr } => {
            let add = matches!(a, Action::AddAddr { .. });
            let i = index(k, ns.as_deref(), dev).await?;
            let op = format!("{} {addr} on {dev}", if add { "add" } else { "delete" });
            send(k, ns.as_deref(), &op, vec![address(i, *addr, add)]).await
        }
        Action::ReplaceRoute { ns, route: r } | Action::DelRoute { ns, route: r } => {
            let replace = matches!(a, Action::ReplaceRoute { .. });
            let oif = match &r.dev {
                Some(d) => Some(index(k, ns.as_deref(), d).await?),
                None => None,
            };
            let op = format!(
                "{} route {}",
                if replace { "replace" } else { "delete" },
                r.dst
            );
            send(k, ns.as_deref(), &op, vec![route(r, oif, replace)]).await
        }
        Action::LoadNft { .. }
        | Action::LoadLbMaps { .. }
        | Action::LoadNft6 { .. }
        | Action::LoadLbMaps6 { .. } => crate::device::execute(a).await,
        Action::SetForwarding6 { .. }
        | Action::AddAddr6 { .. }
        | Action::DelAddr6 { .. }
        | Action::ReplaceRoute6 { .. }
        | Action::DelRoute6 { .. } => execute6(k, a).await,
    }
}

/// A veth pair: `host` here, `peer` created directly in `ns`, then both marked ours (the
/// host end on the host socket, the peer on the namespace's) once the creation succeeded.
async fn add_veth_pair(k: &Kernel, host: &str, peer: &str, ns: &str) -> Result<(), DeviceError> {
    let path = netns::path_of(ns);
    let f = std::fs::File::open(&path).map_err(|source| DeviceError::Spawn {
        cmd: format!("open {}", path.display()),
        source,
    })?;
    // The file stays open until the kernel answered (it resolves the fd while handling).
    let create = add_veth(host, peer, f.as_raw_fd());
    send(
        k,
        None,
        &format!("create veth {host} / {peer} in {ns}"),
        vec![create],
    )
    .await?;
    drop(f);
    let (op_host, op_peer) = (
        format!("set alias of {host}"),
        format!("set alias of {peer}"),
    );
    let (h, p) = futures::join!(
        send(k, None, &op_host, vec![mark_owned(host)]),
        send(k, Some(ns), &op_peer, vec![mark_owned(peer)]),
    );
    h.and(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_must_be_six_bytes() {
        assert!(set_mac("t", "02:00:00:00:07:01").is_ok());
        assert!(set_mac("t", "02:00:00:07:01").is_err());
        assert!(set_mac("t", "zz:00:00:00:07:01").is_err());
    }

    #[test]
    fn routes_without_a_gateway_have_link_scope() {
        let r = Route {
            dst: "10.9.0.0/16".parse().unwrap(),
            via: None,
            dev: Some("t7".into()),
        };
        let NetlinkPayloadRoute(m) = payload(route(&r, Some(3), true));
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        let NetlinkPayloadRoute(d) = payload(route(&r, Some(3), false));
        assert_eq!(d.header.scope, RouteScope::NoWhere);
    }

    struct NetlinkPayloadRoute(netlink_packet_route::route::RouteMessage);

    fn payload(req: Request) -> NetlinkPayloadRoute {
        match req.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m),
            ) => NetlinkPayloadRoute(m),
            other => panic!("not a route message: {other:?}"),
        }
    }
}
