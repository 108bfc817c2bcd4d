//! Observing and changing the kernel: the only impure part of the VPC router dataplane.
//! Links, addresses, routes and forwarding are observed through the long-lived netlink
//! sockets of [`crate::kernel`] (dumps parsed into the same [`Link`] / [`Route`] model the
//! iproute2 parsers fill, which stay as the [`iproute2`] baseline); nftables is read with
//! `nft` (`-t`, or the small `lbsum` set). Every planned [`Action`] is one or a few `ip` / `nft`
//! commands, VPC namespaces addressed with `ip -n NS` / `ip netns exec NS`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{Ipv4Net, Ipv6Net};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::AddressFamily;
use serde::Deserialize;
use sf_linux::links::{parse_links, Link, OWNER_ALIAS};
use sf_linux::netlink::mirror::MirrorState;
use sf_linux::netlink::route::{self, RouteProtocol, RouteType, RouteV4};
use sf_linux::netlink::{observe, Netlink};
use sf_linux::{run, DeviceError};

use crate::kernel::{Kernel, NftSeen};
use crate::nft;
use crate::plan::{Action, HostState, NsState, Route};
use crate::plan6::Route6;

/// Parses `ip -j -d addr show` (sf-linux's link parser; a namespace without output has no
/// links).
pub fn parse_addr_links(json: &str) -> Result<Vec<Link>, String> {
    if json.trim().is_empty() {
        return Ok(vec![]);
    }
    parse_links(json)
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gateway: Option<String>,
    dev: Option<String>,
    protocol: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Parses `ip -j -4 route show table main`, keeping only routes somebody configured: not the
/// kernel's connected routes, not unicast-less types, and not the routes FRR installs
/// (`proto bgp`: the host's fabric routes, a VPC's Direct Connect routes), which belong to
/// FRR and must never be "repaired" away by the planner.
pub fn parse_routes(json: &str) -> Result<Vec<Route>, String> {
    if json.trim().is_empty() {
        return Ok(vec![]);
    }
    let raw: Vec<RawRoute> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(raw
        .into_iter()
        .filter(|r| !matches!(r.protocol.as_deref(), Some("kernel" | "bgp")))
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "unicast"))
        .filter_map(|r| {
            let dst = if r.dst == "default" {
                Ipv4Net::default()
            } else if r.dst.contains('/') {
                r.dst.parse().ok()?
            } else {
                Ipv4Net::new(r.dst.parse().ok()?, 32).ok()?
            };
            Some(Route {
                dst,
                via: r.gateway.and_then(|g| g.parse().ok()),
                dev: r.dev,
            })
        })
        .collect())
}

fn parse_err(cmd: &str, detail: String) -> DeviceError {
    DeviceError::Parse {
        cmd: cmd.into(),
        detail,
    }
}

/// Network namespaces whose name starts with `prefix`: the names `ip netns add` mounted
/// under /run/netns (read directly, as `ip netns list` does, without a process).
pub async fn namespaces(prefix: &str) -> Result<BTreeSet<String>, DeviceError> {
    let dir = sf_linux::netlink::netns::NETNS_RUN_DIR;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // No namespace was ever added on this host.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => {
            return Err(DeviceError::Spawn {
                cmd: format!("list {dir}"),
                source,
            })
        }
    };
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// Links (with addresses) and configured routes of a namespace, from one link, one address
/// and one route dump on its socket.
pub async fn links_routes(nl: &Netlink) -> Result<(Vec<Link>, Vec<Route>), DeviceError> {
    // One dump after the other: a socket runs one dump at a time (EBUSY otherwise).
    let links = observe::links_with_addresses(nl)
        .await
        .map_err(|e| e.on("dump links and addresses"))?;
    let routes = route::dump_v4(nl, route::MAIN)
        .await
        .map_err(|e| e.on("dump routes"))?;
    let routes = configured_routes(&routes, &links);
    Ok((links, routes))
}

/// The routes somebody configured, as [`parse_routes`] keeps them from `ip -j -4 route show
/// table main`: not the kernel's connected routes, only unicast, not FRR's (`proto bgp`);
/// the output device by name (none for a multipath route).
pub fn configured_routes(routes: &[RouteV4], links: &[Link]) -> Vec<Route> {
    let names: HashMap<u32, &str> = links.iter().map(|l| (l.ifindex, l.name.as_str())).collect();
    routes
        .iter()
        .filter(|r| !matches!(r.protocol, RouteProtocol::Kernel | RouteProtocol::Bgp))
        .filter(|r| r.kind == RouteType::Unicast)
        .map(|r| Route {
            dst: r.dst,
            via: r.gateway,
            dev: r.oif.and_then(|i| names.get(&i)).map(|n| n.to_string()),
        })
        .collect()
}

/// The IPv6 addresses of a namespace by link name, and its configured IPv6 routes of the
/// main table (not the kernel's, not FRR's, not learnt from RAs), from one address and one
/// route dump; `links` names the ifindexes.
pub async fn observe6(
    nl: &Netlink,
    links: &[Link],
) -> Result<(BTreeMap<String, Vec<Ipv6Net>>, Vec<Route6>), DeviceError> {
    let names: HashMap<u32, &str> = links.iter().map(|l| (l.ifindex, l.name.as_str())).collect();
    let msgs: Vec<_> = nl
        .handle()
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| sf_linux::netlink::NetlinkError::from(e).on("dump IPv6 addresses"))?;
    let mut addrs: BTreeMap<String, Vec<Ipv6Net>> = BTreeMap::new();
    for m in msgs
        .iter()
        .filter(|m| m.header.family == AddressFamily::Inet6)
    {
        let a = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
            _ => None,
        });
        let net = a.and_then(|ip| Ipv6Net::new(ip, m.header.prefix_len).ok());
        if let (Some(net), Some(name)) = (net, names.get(&m.header.index)) {
            addrs.entry(name.to_string()).or_default().push(net);
        }
    }
    let req = rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build();
    let msgs: Vec<RouteMessage> = nl
        .handle()
        .route()
        .get(req)
        .execute()
        .try_collect()
        .await
        .map_err(|e| sf_linux::netlink::NetlinkError::from(e).on("dump IPv6 routes"))?;
    let routes = msgs
        .iter()
        .filter_map(|m| parse_route6(m, &names))
        .collect();
    Ok((addrs, routes))
}

/// One configured IPv6 unicast route of the main table, as [`configured_routes`] keeps
/// IPv4 ones (and not the ones RAs installed).
fn parse_route6(m: &RouteMessage, names: &HashMap<u32, &str>) -> Option<Route6> {
    if m.header.address_family != AddressFamily::Inet6
        || !configured6(m.header.protocol, m.header.kind)
    {
        return None;
    }
    let mut table = m.header.table as u32;
    let (mut dst, mut via, mut dev) = (Ipv6Addr::UNSPECIFIED, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(*ip),
            RouteAttribute::Oif(i) => dev = names.get(i).map(|n| n.to_string()),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (table == route::MAIN).then_some(())?;
    Some(Route6 {
        dst: Ipv6Net::new(dst, m.header.destination_prefix_length).ok()?,
        via,
        dev,
    })
}

/// The gateway host namespace (the one the agent runs in).
pub async fn observe_host(k: &Kernel) -> Result<HostState, DeviceError> {
    let nl = k.host()?;
    let (links, routes) = links_routes(&nl).await?;
    let (addrs6, routes6) = observe6(&nl, &links).await?;
    Ok(HostState {
        links,
        routes,
        forwarding: host_forwarding().await?,
        addrs6,
        routes6,
    })
}

/// The host as its [`Mirror`](sf_linux::netlink::mirror::Mirror) holds it, in the shape a
/// dump gives ([`observe_host`]): links by ifindex with their IPv4 addresses, the routes
/// somebody configured (sorted, so that the same host gives the same view pass after
/// pass), the IPv6 addresses by link name and the configured IPv6 routes.
pub fn host_from_mirror(m: &MirrorState, forwarding: bool) -> HostState {
    let links = m.links_with_addresses();
    let routes4: Vec<RouteV4> = m.routes_v4().cloned().collect();
    let mut routes = configured_routes(&routes4, &links);
    routes.sort();
    let names: HashMap<u32, &str> = links.iter().map(|l| (l.ifindex, l.name.as_str())).collect();
    let addrs6 = m
        .addresses_v6()
        .into_iter()
        .filter_map(|(i, a)| Some((names.get(&i)?.to_string(), a)))
        .collect();
    let mut routes6: Vec<Route6> = m
        .routes_v6()
        .filter(|r| configured6(r.protocol, r.kind))
        .map(|r| Route6 {
            dst: r.dst,
            via: r.gateway,
            dev: r.oif.and_then(|i| names.get(&i)).map(|n| n.to_string()),
        })
        .collect();
    routes6.sort();
    HostState {
        links,
        routes,
        forwarding,
        addrs6,
        routes6,
    }
}

/// Whether an IPv6 route is one somebody configured: not the kernel's, FRR's or an RA's,
/// and unicast.
fn configured6(protocol: RouteProtocol, kind: RouteType) -> bool {
    !matches!(
        protocol,
        RouteProtocol::Kernel | RouteProtocol::Bgp | RouteProtocol::Ra
    ) && kind == RouteType::Unicast
}

pub async fn host_forwarding() -> Result<bool, DeviceError> {
    let fwd = tokio::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .await
        .map_err(|source| DeviceError::Spawn {
            cmd: "read /proc/sys/net/ipv4/ip_forward".into(),
            source,
        })?;
    Ok(fwd.trim() == "1")
}

/// Links, addresses, configured routes and forwarding of VPC namespace `ns`, through its
/// sockets. A failure drops the namespace's sockets: the next pass opens new ones.
pub async fn observe_links(
    k: &Kernel,
    ns: &str,
) -> Result<(Vec<Link>, Vec<Route>, bool), DeviceError> {
    let seen = async {
        let s = k.ns(ns)?;
        let (links, routes) = links_routes(&s.nl).await?;
        Ok((links, routes, s.forwarding()?))
    }
    .await;
    seen.inspect_err(|_| k.forget(ns))
}

/// One VPC namespace: [`observe_links`], and the nftables digests: from `nft` when the
/// namespace's ruleset generation moved since `nft` was last run there, else as then.
pub async fn observe_ns(k: &Kernel, ns: &str) -> Result<NsState, DeviceError> {
    let (links, routes, forwarding) = observe_links(k, ns).await?;
    let v6 = async {
        let s = k.ns(ns)?;
        let (addrs6, routes6) = observe6(&s.nl, &links).await?;
        Ok::<_, DeviceError>((addrs6, routes6, s.forwarding6()?))
    }
    .await
    .inspect_err(|_| k.forget(ns))?;
    let (nft_digest, lb_digests, nft6_digest, lb6_digests) = observe_nft_cached(k, ns).await?;
    Ok(NsState {
        links,
        routes,
        forwarding,
        nft_digest,
        lb_digests,
        addrs6: v6.0,
        routes6: v6.1,
        forwarding6: v6.2,
        nft6_digest,
        lb6_digests,
    })
}

/// The former observer: `ip -j -d addr show` and `ip -j -4 route show` processes (through
/// `ip -n`), `sysctl` through `ip netns exec`. Kept as the baseline of `deploy/bench.sh gw`
/// and as the reference the kernel tests hold the netlink observer to.
pub mod iproute2 {
    use super::*;

    async fn links_routes(ns: Option<&str>) -> Result<(Vec<Link>, Vec<Route>), DeviceError> {
        let with_ns = |args: &[&'static str]| -> Vec<String> {
            let mut v: Vec<String> = Vec::new();
            if let Some(n) = ns {
                v.push("-n".into());
                v.push(n.into());
            }
            v.extend(args.iter().map(|s| s.to_string()));
            v
        };
        let a = with_ns(&["-j", "-d", "addr", "show"]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let links = parse_addr_links(&run("ip", &a).await?)
            .map_err(|e| parse_err("ip -j -d addr show", e))?;
        let r = with_ns(&["-j", "-4", "route", "show", "table", "main"]);
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        let routes =
            parse_routes(&run("ip", &r).await?).map_err(|e| parse_err("ip -j -4 route show", e))?;
        Ok((links, routes))
    }

    /// The host namespace.
    pub async fn observe_host() -> Result<HostState, DeviceError> {
        let (links, routes) = links_routes(None).await?;
        Ok(HostState {
            links,
            routes,
            forwarding: host_forwarding().await?,
            ..Default::default()
        })
    }

    /// Links, addresses, configured routes and forwarding of VPC namespace `ns`.
    pub async fn observe_links(ns: &str) -> Result<(Vec<Link>, Vec<Route>, bool), DeviceError> {
        let (links, routes) = links_routes(Some(ns)).await?;
        let fwd = run(
            "ip",
            &["netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward"],
        )
        .await?;
        Ok((links, routes, fwd.trim() == "1"))
    }

    /// One VPC namespace.
    pub async fn observe_ns(ns: &str) -> Result<NsState, DeviceError> {
        let (links, routes, forwarding) = observe_links(ns).await?;
        let (nft_digest, lb_digests, nft6_digest, lb6_digests) = observe_nft(ns).await?;
        Ok(NsState {
            links,
            routes,
            forwarding,
            nft_digest,
            lb_digests,
            nft6_digest,
            lb6_digests,
            ..Default::default()
        })
    }
}

/// The load balancer map digests (`lbsum`) of a VPC namespace's IPv4 and IPv6 tables, as
/// [`observe_ns`] reads them (cached by ruleset generation).
pub async fn observe_lb_maps(
    k: &Kernel,
    ns: &str,
) -> Result<[BTreeMap<usize, String>; 2], DeviceError> {
    let (_, maps, _, maps6) = observe_nft_cached(k, ns).await?;
    Ok([maps, maps6])
}

async fn observe_nft_cached(k: &Kernel, ns: &str) -> Result<NftSeen, DeviceError> {
    let s = k.ns(ns)?;
    let generation = s.nft_generation().inspect_err(|_| k.forget(ns))?;
    if let Some(seen) = s.nft_cached(generation) {
        return Ok(seen);
    }
    k.count_nft_read();
    let seen = observe_nft(ns).await?;
    s.nft_store(generation, seen.clone());
    Ok(seen)
}

fn missing(e: &DeviceError) -> bool {
    matches!(e, DeviceError::Command { stderr, .. } if stderr.contains("No such file or directory"))
}

/// The table digest and load balancer map digests of a VPC namespace, for the IPv4 table
/// and the IPv6 one ([`observe_nft_table`]).
async fn observe_nft(ns: &str) -> Result<NftSeen, DeviceError> {
    let (table, maps) = observe_nft_table(ns, "ip", nft::TABLE).await?;
    let (table6, maps6) = observe_nft_table(ns, "ip6", crate::nft6::TABLE6).await?;
    Ok((table, maps, table6, maps6))
}

/// A router table of family `family` (`ip`, `ip6`) and its load balancer maps' digests: a
/// table with load balancers is read from its small `lbsum` set (listing the table itself
/// would make nft fetch every map element); one without, from the table comment (`nft -t`).
/// No table (an IPv4-only router has no IPv6 one) is `None`, not an error.
async fn observe_nft_table(
    ns: &str,
    family: &str,
    table: &str,
) -> Result<(Option<String>, BTreeMap<usize, String>), DeviceError> {
    let nft = |args: &[&'static str]| {
        let mut v = vec!["netns", "exec", ns, "nft"];
        v.extend_from_slice(args);
        v.extend([family, table]);
        v
    };
    let mut lbsum = nft(&["list", "set"]);
    lbsum.push("lbsum");
    match run("ip", &lbsum).await {
        Ok(listing) => {
            let (digest, maps) = nft::parse_lbsum(&listing);
            if digest.is_some() {
                return Ok((digest, maps));
            }
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(e),
    }
    match run("ip", &nft(&["-t", "list", "table"])).await {
        Ok(listing) => Ok((nft::digest_of(&listing), Default::default())),
        Err(e) if missing(&e) => Ok((None, Default::default())),
        Err(e) => Err(e),
    }
}

async fn ip_in(ns: &Option<String>, args: &[&str]) -> Result<(), DeviceError> {
    let mut v: Vec<&str> = Vec::new();
    if let Some(n) = ns {
        v.extend(["-n", n.as_str()]);
    }
    v.extend_from_slice(args);
    run("ip", &v).await.map(|_| ())
}

/// Loads an nft script into namespace `ns` (sf-linux's runner, with its timeout).
async fn nft_in(ns: &str, script: &str) -> Result<(), DeviceError> {
    let args = ["netns", "exec", ns, "nft", "-f", "-"];
    sf_linux::run_stdin("ip", &args, script).await.map(|_| ())
}

fn route_args(r: &Route) -> Vec<String> {
    let mut v = vec![r.dst.to_string()];
    if let Some(g) = r.via {
        v.extend(["via".into(), g.to_string()]);
    }
    if let Some(d) = &r.dev {
        v.extend(["dev".into(), d.clone()]);
    }
    v
}

/// Runs one planned action.
pub async fn execute(a: &Action) -> Result<(), DeviceError> {
    match a {
        Action::AddNetns { ns } => {
            run("ip", &["netns", "add", ns]).await?;
            ip_in(&Some(ns.clone()), &["link", "set", "dev", "lo", "up"]).await
        }
        Action::DelNetns { ns } => run("ip", &["netns", "del", ns]).await.map(|_| ()),
        Action::SetForwarding { ns: None } => run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
            .await
            .map(|_| ()),
        Action::SetForwarding { ns: Some(ns) } => run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )
        .await
        .map(|_| ()),
        Action::AddVeth { host, peer, ns } => {
            ip_in(
                &None,
                &[
                    "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns,
                ],
            )
            .await?;
            ip_in(
                &None,
                &[
                    "link",
                    "set",
                    "dev",
                    host,
                    "alias",
                    OWNER_ALIAS,
                    "addrgenmode",
                    "none",
                ],
            )
            .await?;
            ip_in(
                &Some(ns.clone()),
                &[
                    "link",
                    "set",
                    "dev",
                    peer,
                    "alias",
                    OWNER_ALIAS,
                    "addrgenmode",
                    "none",
                ],
            )
            .await
        }
        Action::DelLink { ns, link } => ip_in(ns, &["link", "del", "dev", link]).await,
        Action::SetMaster { link, master } => {
            ip_in(&None, &["link", "set", "dev", link, "master", master]).await
        }
        Action::SetMac { ns, link, mac } => {
            ip_in(
                &Some(ns.clone()),
                &["link", "set", "dev", link, "address", mac],
            )
            .await
        }
        Action::SetUp { ns, link } => ip_in(ns, &["link", "set", "dev", link, "up"]).await,
        Action::SetDown { link } => ip_in(&None, &["link", "set", "dev", link, "down"]).await,
        Action::AddAddr { ns, dev, addr } => {
            ip_in(ns, &["addr", "add", &addr.to_string(), "dev", dev]).await
        }
        Action::DelAddr { ns, dev, addr } => {
            ip_in(ns, &["addr", "del", &addr.to_string(), "dev", dev]).await
        }
        Action::ReplaceRoute { ns, route } => {
            let r = route_args(route);
            let mut v = vec!["route", "replace"];
            v.extend(r.iter().map(String::as_str));
            ip_in(ns, &v).await
        }
        Action::DelRoute { ns, route } => {
            let r = route_args(route);
            let mut v = vec!["route", "del"];
            v.extend(r.iter().map(String::as_str));
            ip_in(ns, &v).await
        }
        Action::LoadNft { ns, table, lbs } => {
            let mut script = nft::transaction(table);
            script.push_str(&nft::lb_script(lbs));
            nft_in(ns, &script).await
        }
        Action::LoadLbMaps { ns, lbs } => nft_in(ns, &nft::lb_script(lbs)).await,
        Action::LoadNft6 { ns, table, lbs } => {
            let mut script = crate::nft6::transaction6(table.as_deref());
            script.push_str(&crate::nft6::lb_script6(lbs));
            nft_in(ns, &script).await
        }
        Action::LoadLbMaps6 { ns, lbs } => nft_in(ns, &crate::nft6::lb_script6(lbs)).await,
        // The former executor is the IPv4 bench baseline only; IPv6 goes through netlink.
        Action::SetForwarding6 { .. }
        | Action::AddAddr6 { .. }
        | Action::DelAddr6 { .. }
        | Action::ReplaceRoute6 { .. }
        | Action::DelRoute6 { .. } => Err(DeviceError::Parse {
            cmd: format!("{a:?}"),
            detail: "IPv6 actions run through the netlink executor only".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_links_with_addresses_and_routes() {
        let links = parse_addr_links(
            r#"[{"ifindex":3,"link":"transit","ifname":"gx7","flags":["BROADCAST","UP","LOWER_UP"],
                "ifalias":"stackfabric","address":"aa:a7:74:36:ab:be","linkinfo":{"info_kind":"veth"},
                "addr_info":[{"family":"inet","local":"198.18.0.14","prefixlen":31},
                             {"family":"inet6","local":"fe80::1","prefixlen":64}]},
               {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"address":"00:00:00:00:00:00","addr_info":[]}]"#,
        )
        .unwrap();
        assert_eq!(links[0].name, "gx7");
        assert!(links[0].owned && links[0].up);
        assert_eq!(links[0].kind.as_deref(), Some("veth"));
        assert_eq!(
            links[0].addrs,
            vec!["198.18.0.14/31".parse::<Ipv4Net>().unwrap()]
        );
        assert!(!links[1].owned);
        let routes = parse_routes(
            r#"[{"dst":"default","gateway":"198.18.0.14","dev":"transit","flags":[]},
                {"dst":"198.18.0.14/31","dev":"gx7","protocol":"kernel","scope":"link","prefsrc":"198.18.0.14","flags":[]},
                {"dst":"203.0.113.10","gateway":"198.18.0.15","dev":"gx7","flags":[]},
                {"type":"blackhole","dst":"10.0.0.0/8","flags":[]},
                {"dst":"192.168.100.0/24","gateway":"169.254.100.2","dev":"d1000100","protocol":"bgp","metric":20,"flags":[]}]"#,
        )
        .unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].dst, Ipv4Net::default());
        assert_eq!(routes[1].dst, "203.0.113.10/32".parse::<Ipv4Net>().unwrap());
        assert_eq!(routes[1].dev.as_deref(), Some("gx7"));
        assert!(parse_routes("").unwrap().is_empty());
    }
}
