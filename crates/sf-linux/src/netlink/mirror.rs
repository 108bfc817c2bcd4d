//! A namespace's links, addresses and main-table routes as the kernel has them, kept from
//! its own messages instead of a dump per look: what lets a gateway with 1,000 VPC routers
//! (~4,000 host links) plan one router's change without reading every link again.
//!
//! [`Mirror`] owns one routing socket subscribed to the link, address and route groups (IPv4
//! and IPv6). Every RTM_NEWLINK of family AF_UNSPEC carries a link's whole state (see
//! [`LinkView`]), every RTM_NEWADDR / RTM_DELADDR one address, every RTM_NEWROUTE /
//! RTM_DELROUTE one route, so applying them in order follows the kernel. Two things the
//! kernel removes without a message are applied by hand: a link's addresses and routes go
//! with the link, and IPv4 routes through a link go when it goes down (`fib_sync_down_dev`).
//!
//! [`Mirror::sync`] makes the mirror current up to the moment it is called: it sends one
//! small request (the loopback's link) on the subscribed socket and waits for its answer.
//! netlink-proto forwards the unsolicited messages it read before that answer first, so
//! once the answer is in, every message the kernel sent before the request is in the
//! channel; they are applied, and the mirror shows every change made before the call (a
//! pass's own changes included). The first sync, a lost message (receive-buffer overrun)
//! and an explicit full sync dump everything instead; the messages that arrive during the
//! dumps are applied on top of them afterwards (each is followed by any newer one, so the
//! result is the newest state).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use rtnetlink::RouteMessageBuilder;

use super::events::LinkUpdate;
use super::route::{self, RouteV4, RouteV6};
use super::view::LinkView;
use super::{Netlink, NetlinkError};
use crate::links::Link;

/// A route's identity in a table: (table, destination, TOS, metric). The kernel keeps one
/// route per key (a replace is a new message with the same key).
type RouteKey<N> = (u32, N, u8, u32);

/// What the mirror holds: pure, fed messages (see the module docs).
#[derive(Debug, Default)]
pub struct MirrorState {
    links: LinkView,
    /// Addresses by link ifindex (IPv4: IFA_LOCAL, IPv6: IFA_ADDRESS).
    addrs: HashMap<u32, BTreeSet<IpNet>>,
    routes4: HashMap<RouteKey<Ipv4Net>, RouteV4>,
    routes6: HashMap<RouteKey<ipnet::Ipv6Net>, RouteV6>,
    /// Messages were lost (or none were ever read): only a dump is trustworthy.
    stale: bool,
}

/// The three dumps a full sync reads.
#[derive(Debug, Default)]
pub struct Dump {
    pub links: Vec<LinkMessage>,
    pub addrs: Vec<AddressMessage>,
    pub routes: Vec<RouteMessage>,
}

impl MirrorState {
    /// An empty state, stale until the first dump.
    pub fn new() -> Self {
        MirrorState {
            stale: true,
            ..Default::default()
        }
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Everything the dump holds replaces what was held; the caller then applies the
    /// messages that arrived meanwhile.
    pub fn replace(&mut self, d: &Dump) {
        self.links = LinkView::new();
        self.links.begin_dump();
        self.links
            .finish_dump(super::observe::parse_links(&d.links));
        self.links.take_dirty();
        self.addrs.clear();
        self.routes4.clear();
        self.routes6.clear();
        for a in &d.addrs {
            self.new_addr(a);
        }
        for r in &d.routes {
            self.new_route(r);
        }
        self.stale = false;
    }

    /// Applies one message; an overrun makes the state stale.
    pub fn apply(&mut self, m: &NetlinkPayload<RouteNetlinkMessage>) {
        use RouteNetlinkMessage as R;
        match m {
            NetlinkPayload::Overrun(_) => self.stale = true,
            NetlinkPayload::InnerMessage(inner) => match inner {
                R::NewLink(l) => self.new_link(l),
                R::DelLink(l) => self.del_link(l),
                R::NewAddress(a) => self.new_addr(a),
                R::DelAddress(a) => self.del_addr(a),
                R::NewRoute(r) => self.new_route(r),
                R::DelRoute(r) => self.del_route(r),
                _ => {}
            },
            _ => {}
        }
    }

    fn new_link(&mut self, l: &LinkMessage) {
        self.links.apply(&LinkUpdate::New(l.clone()));
        let whole = l.header.interface_family != AddressFamily::Bridge;
        if whole && !l.header.flags.contains(LinkFlags::Up) {
            // The kernel flushes IPv4 routes through a link that goes down, silently.
            let i = l.header.index;
            self.routes4.retain(|_, r| r.oif != Some(i));
        }
    }

    fn del_link(&mut self, l: &LinkMessage) {
        let whole = l.header.interface_family != AddressFamily::Bridge;
        self.links.apply(&LinkUpdate::Deleted(l.clone()));
        if whole {
            let i = l.header.index;
            self.addrs.remove(&i);
            self.routes4.retain(|_, r| r.oif != Some(i));
            self.routes6.retain(|_, r| r.oif != Some(i));
        }
    }

    fn new_addr(&mut self, a: &AddressMessage) {
        if let Some(net) = addr_of(a) {
            self.addrs.entry(a.header.index).or_default().insert(net);
        }
    }

    fn del_addr(&mut self, a: &AddressMessage) {
        if let Some(net) = addr_of(a) {
            if let Some(set) = self.addrs.get_mut(&a.header.index) {
                set.remove(&net);
                if set.is_empty() {
                    self.addrs.remove(&a.header.index);
                }
            }
        }
    }

    fn new_route(&mut self, m: &RouteMessage) {
        if let Some(r) = route::parse_v4(m).filter(|r| r.table == route::MAIN) {
            self.routes4.insert(key(m, r.table, r.dst), r);
        } else if let Some(r) = route::parse_v6(m).filter(|r| r.table == route::MAIN) {
            self.routes6.insert(key(m, r.table, r.dst), r);
        }
    }

    fn del_route(&mut self, m: &RouteMessage) {
        if let Some(r) = route::parse_v4(m) {
            self.routes4.remove(&key(m, r.table, r.dst));
        } else if let Some(r) = route::parse_v6(m) {
            self.routes6.remove(&key(m, r.table, r.dst));
        }
    }

    pub fn links(&self) -> &LinkView {
        &self.links
    }

    /// The links, for what the kernel announces without a message
    /// ([`LinkView::set_ipv6_disabled`]).
    pub fn links_mut(&mut self) -> &mut LinkView {
        &mut self.links
    }

    /// Records what the L2 executor's successful actions `done` changed without a message:
    /// the host's IPv6 turned off on a new or repaired overlay link (a `/proc/sys` write).
    pub fn record_l2(&mut self, done: &[crate::l2::Action]) {
        use crate::l2::Action;
        for a in done {
            if let Action::DisableIpv6 { link: name }
            | Action::AddBridge { name }
            | Action::AddVxlan { name, .. } = a
            {
                self.links.set_ipv6_disabled(name);
            }
        }
    }

    /// The loopback's IPv4 addresses (lo is the first device of every network namespace),
    /// as the L2 planner reads them.
    pub fn loopback_v4(&self) -> Vec<Ipv4Addr> {
        self.addresses_v4(1).iter().map(|n| n.addr()).collect()
    }

    /// Every link with its IPv4 addresses (as [`super::observe::links_with_addresses`]),
    /// by ifindex.
    pub fn links_with_addresses(&self) -> Vec<Link> {
        let mut links = self.links.to_vec();
        for l in &mut links {
            l.addrs = self.addresses_v4(l.ifindex);
            l.ipv6_enabled = None;
        }
        links
    }

    /// The IPv4 addresses of link `index`.
    pub fn addresses_v4(&self, index: u32) -> Vec<Ipv4Net> {
        self.addrs
            .get(&index)
            .into_iter()
            .flatten()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some(*n),
                IpNet::V6(_) => None,
            })
            .collect()
    }

    /// The IPv6 addresses by link ifindex (links without any are absent).
    pub fn addresses_v6(&self) -> BTreeMap<u32, Vec<ipnet::Ipv6Net>> {
        let mut out: BTreeMap<u32, Vec<ipnet::Ipv6Net>> = BTreeMap::new();
        for (i, set) in &self.addrs {
            for n in set {
                if let IpNet::V6(n) = n {
                    out.entry(*i).or_default().push(*n);
                }
            }
        }
        out
    }

    /// The main table's IPv4 routes.
    pub fn routes_v4(&self) -> impl Iterator<Item = &RouteV4> {
        self.routes4.values()
    }

    /// The main table's IPv6 routes.
    pub fn routes_v6(&self) -> impl Iterator<Item = &RouteV6> {
        self.routes6.values()
    }
}

fn key<N>(m: &RouteMessage, table: u32, dst: N) -> RouteKey<N> {
    (table, dst, m.header.tos, route::priority_of(m))
}

/// The address a message is about: IFA_LOCAL for IPv4 (IFA_ADDRESS is the peer on a
/// point-to-point link), IFA_ADDRESS for IPv6.
fn addr_of(a: &AddressMessage) -> Option<IpNet> {
    let ip = match a.header.family {
        AddressFamily::Inet => a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(ip @ IpAddr::V4(_)) => Some(*ip),
            _ => None,
        })?,
        AddressFamily::Inet6 => a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip @ IpAddr::V6(_)) => Some(*ip),
            _ => None,
        })?,
        _ => return None,
    };
    IpNet::new(ip, a.header.prefix_len).ok()
}

/// The subscribed socket and the state it keeps (see the module docs).
pub struct Mirror {
    socket: Socket,
    state: MirrorState,
    dumps: u64,
}

/// Receive buffer asked for (SO_RCVBUFFORCE as root): the messages of a pass's changes wait
/// there until the next sync. More than that is an overrun, and the next sync dumps.
const MIRROR_RCVBUF: usize = 8 << 20;

impl Mirror {
    /// Subscribes in the calling thread's network namespace; stale until the first sync.
    pub fn open() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&netlink_sys::SocketAddr::new(0, GROUPS))?;
        socket.set_non_blocking(true)?;
        force_rcvbuf(&socket, MIRROR_RCVBUF);
        Ok(Mirror {
            socket,
            state: MirrorState::new(),
            dumps: 0,
        })
    }

    /// Brings the mirror up to now (see the module docs), dumping through `nl` (a socket of
    /// the same namespace) when it is stale or `full` asks. On an error the mirror is
    /// stale: the next sync dumps.
    pub async fn sync(&mut self, nl: &Netlink, full: bool) -> Result<(), NetlinkError> {
        let r = self.try_sync(nl, full).await;
        if r.is_err() {
            self.state.stale = true;
        }
        r
    }

    async fn try_sync(&mut self, nl: &Netlink, full: bool) -> Result<(), NetlinkError> {
        self.drain();
        if full || self.state.is_stale() {
            self.state.stale = false;
            let d = dump(nl).await?;
            self.state.replace(&d);
            self.dumps += 1;
            // What changed during the dumps, on top of them.
            self.drain();
            if self.state.is_stale() {
                return Err(NetlinkError::Other("messages lost during the dump".into()));
            }
        }
        self.refresh_unsure(nl).await
    }

    /// Applies every message waiting in the socket: all the kernel sent before this call
    /// (it queues a message when the change is made, not later).
    fn drain(&mut self) {
        let mut buf = Vec::with_capacity(RECV_CHUNK);
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(0) => return,
                Ok(n) => {
                    if !apply_datagram(&mut self.state, &buf[..n.min(buf.len())]) {
                        self.state.stale = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ENOBUFS: the kernel dropped messages; keep draining what is left.
                Err(_) => self.state.stale = true,
            }
        }
    }

    /// Reads back the links whose last message was a bridge port's only (see [`LinkView`]).
    async fn refresh_unsure(&mut self, nl: &Netlink) -> Result<(), NetlinkError> {
        for index in self.state.links.take_unsure() {
            for m in super::view::read_back(nl, index).await? {
                self.state.links.apply(&LinkUpdate::New(m));
            }
        }
        Ok(())
    }

    pub fn state(&self) -> &MirrorState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut MirrorState {
        &mut self.state
    }

    /// How many full dumps this mirror made (the first one included).
    pub fn dumps(&self) -> u64 {
        self.dumps
    }
}

/// The legacy group bitmask: links, IPv4 and IPv6 addresses and routes.
const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;

/// RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE.
const KEPT_TYPES: [u16; 6] = [16, 17, 20, 21, 24, 25];

/// The largest datagram read at once (a notification is at most a page or 8 kB).
const RECV_CHUNK: usize = 64 << 10;

fn force_rcvbuf(socket: &Socket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let v = bytes as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and a c_int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// Applies the messages of one datagram; false when one could not be parsed.
fn apply_datagram(state: &mut MirrorState, mut buf: &[u8]) -> bool {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > buf.len() {
            return false;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            Ok(m) => state.apply(&m.payload),
            // A link, address or route message lost to the parser makes the state unsure;
            // other kinds are none of the mirror's business.
            Err(_) if KEPT_TYPES.contains(&u16::from_ne_bytes([buf[4], buf[5]])) => return false,
            Err(_) => {}
        }
        let next = (len + 3) & !3;
        if next >= buf.len() {
            break;
        }
        buf = &buf[next..];
    }
    true
}

/// Links, addresses and both families' routes, one dump after the other (a socket runs one
/// dump at a time).
async fn dump(nl: &Netlink) -> Result<Dump, NetlinkError> {
    let links = super::observe::link_messages(nl).await?;
    let h = nl.handle();
    let addrs = h.address().get().execute().try_collect().await?;
    let mut routes: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await?;
    let v6 = RouteMessageBuilder::<std::net::Ipv6Addr>::new().build();
    routes.extend(h.route().get(v6).execute().try_collect::<Vec<_>>().await?);
    Ok(Dump {
        links,
        addrs,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkAttribute;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};

    fn link(index: u32, name: &str, up: bool) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::IfName(name.into()));
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))
    }

    fn route(dst: &str, gw: &str, oif: u32, metric: u32) -> RouteMessage {
        let dst: Ipv4Net = dst.parse().unwrap();
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.destination_prefix_length = dst.prefix_len();
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst.addr())));
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                gw.parse().unwrap(),
            )));
        m.attributes.push(RouteAttribute::Oif(oif));
        m.attributes.push(RouteAttribute::Priority(metric));
        m
    }

    fn addr(index: u32, ip: &str) -> AddressMessage {
        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet;
        a.header.index = index;
        a.header.prefix_len = 24;
        a.attributes
            .push(AddressAttribute::Local(ip.parse().unwrap()));
        a
    }

    fn inner(m: RouteNetlinkMessage) -> NetlinkPayload<RouteNetlinkMessage> {
        NetlinkPayload::InnerMessage(m)
    }

    fn gateways(s: &MirrorState) -> Vec<String> {
        let mut v: Vec<String> = s
            .routes_v4()
            .map(|r| format!("{} {:?} {:?}", r.dst, r.gateway, r.oif))
            .collect();
        v.sort();
        v
    }

    use netlink_packet_route::route::RouteHeader;

    #[test]
    fn a_route_with_the_same_key_replaces_and_another_metric_adds() {
        let mut s = MirrorState::new();
        s.replace(&Dump::default());
        s.apply(&inner(RouteNetlinkMessage::NewRoute(route(
            "10.0.0.0/8",
            "192.0.2.1",
            2,
            0,
        ))));
        s.apply(&inner(RouteNetlinkMessage::NewRoute(route(
            "10.0.0.0/8",
            "192.0.2.9",
            2,
            0,
        ))));
        s.apply(&inner(RouteNetlinkMessage::NewRoute(route(
            "10.0.0.0/8",
            "192.0.2.5",
            3,
            5,
        ))));
        assert_eq!(
            gateways(&s),
            [
                "10.0.0.0/8 Some(192.0.2.5) Some(3)",
                "10.0.0.0/8 Some(192.0.2.9) Some(2)"
            ]
        );
        s.apply(&inner(RouteNetlinkMessage::DelRoute(route(
            "10.0.0.0/8",
            "192.0.2.9",
            2,
            0,
        ))));
        assert_eq!(gateways(&s), ["10.0.0.0/8 Some(192.0.2.5) Some(3)"]);
    }

    #[test]
    fn a_link_takes_its_routes_when_down_and_its_addresses_when_gone() {
        let mut s = MirrorState::new();
        s.replace(&Dump::default());
        s.apply(&link(2, "a", true));
        s.apply(&link(3, "b", true));
        s.apply(&inner(RouteNetlinkMessage::NewAddress(addr(
            2,
            "192.0.2.1",
        ))));
        s.apply(&inner(RouteNetlinkMessage::NewAddress(addr(
            3,
            "198.51.100.1",
        ))));
        s.apply(&inner(RouteNetlinkMessage::NewRoute(route(
            "10.1.0.0/16",
            "192.0.2.9",
            2,
            0,
        ))));
        s.apply(&inner(RouteNetlinkMessage::NewRoute(route(
            "10.2.0.0/16",
            "198.51.100.9",
            3,
            0,
        ))));
        // Down: the kernel flushes its IPv4 routes without a message; addresses stay.
        s.apply(&link(2, "a", false));
        assert_eq!(gateways(&s), ["10.2.0.0/16 Some(198.51.100.9) Some(3)"]);
        assert_eq!(
            s.addresses_v4(2),
            vec!["192.0.2.1/24".parse::<Ipv4Net>().unwrap()]
        );
        let mut del = LinkMessage::default();
        del.header.index = 3;
        del.attributes.push(LinkAttribute::IfName("b".into()));
        s.apply(&inner(RouteNetlinkMessage::DelLink(del)));
        assert!(gateways(&s).is_empty());
        assert!(s.addresses_v4(3).is_empty());
        assert_eq!(
            s.links_with_addresses()
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[test]
    fn lost_messages_make_it_stale_until_a_dump() {
        let mut s = MirrorState::new();
        assert!(s.is_stale());
        s.replace(&Dump::default());
        assert!(!s.is_stale());
        s.apply(&NetlinkPayload::Overrun(Vec::new()));
        assert!(s.is_stale());
        s.replace(&Dump::default());
        assert!(!s.is_stale());
    }

    #[test]
    fn a_datagram_of_several_messages_is_applied_whole() {
        let mut buf = Vec::new();
        for (i, name) in [(2, "a"), (3, "b")] {
            let NetlinkPayload::InnerMessage(inner) = link(i, name, true) else {
                unreachable!()
            };
            let mut m = NetlinkMessage::from(inner);
            m.finalize();
            let mut b = vec![0; m.buffer_len()];
            m.serialize(&mut b);
            buf.extend_from_slice(&b);
        }
        let mut s = MirrorState::new();
        s.replace(&Dump::default());
        assert!(apply_datagram(&mut s, &buf));
        assert_eq!(s.links().len(), 2);
        assert!(!apply_datagram(
            &mut s,
            &[0xff, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        ));
    }
}
