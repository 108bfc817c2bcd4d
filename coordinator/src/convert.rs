//! Conversions between wire messages (`sf_proto::v1`) and the model (`sf_core`), and from
//! validation/store errors to `tonic::Status` — the only place errors become RPC statuses.

use sf_core::desired::L4Protocol;
use sf_core::event::VpcRef;
use sf_core::model::{
    NatKind, NatRule, Network, Node, NodeRole, Placement, Pool, PortBinding, StaticRoute, Tenant,
    Vpc,
};
use sf_core::validate::{ErrorKind, ValidationError};
use sf_proto::v1 as pb;
use sf_store::intent::WriteError;
use tonic::Status;

pub fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid {field}: {message}"))
}

pub fn validation_status(e: ValidationError) -> Status {
    let msg = e.to_string();
    match e.kind {
        ErrorKind::Invalid => Status::invalid_argument(msg),
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::AlreadyExists => Status::already_exists(msg),
        ErrorKind::InUse => Status::failed_precondition(msg),
    }
}

pub fn write_status(e: WriteError) -> Status {
    match e {
        WriteError::Conflict(m) => Status::aborted(m),
        WriteError::Stale => Status::aborted(e.to_string()),
        WriteError::PoolExhausted(_) => Status::resource_exhausted(e.to_string()),
        WriteError::Store(s) => Status::unavailable(format!("etcd unavailable: {s}")),
    }
}

fn parse<T: std::str::FromStr>(field: &str, s: &str) -> Result<T, Status>
where
    T::Err: std::fmt::Display,
{
    s.trim()
        .parse()
        .map_err(|e| invalid(field, format!("{s:?}: {e}")))
}

pub fn tenant_in(t: pb::Tenant) -> Tenant {
    Tenant {
        name: t.name,
        description: t.description,
    }
}
pub fn tenant_out(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        name: t.name.clone(),
        description: t.description.clone(),
    }
}

pub fn vpc_in(v: pb::Vpc) -> Result<Vpc, Status> {
    Ok(Vpc {
        cidr: parse("vpc.cidr", &v.cidr)?,
        tenant: v.tenant,
        name: v.name,
        site: v.site,
        id: 0,
        ipv6_ranges: v
            .ipv6_ranges
            .iter()
            .enumerate()
            .map(|(i, r)| parse(&format!("vpc.ipv6_ranges[{i}]"), r))
            .collect::<Result<_, _>>()?,
    })
}
pub fn vpc_out(v: &Vpc, p: Option<&Placement>) -> pb::Vpc {
    pb::Vpc {
        tenant: v.tenant.clone(),
        name: v.name.clone(),
        cidr: v.cidr.to_string(),
        site: v.site.clone(),
        id: v.id,
        primary_gateway: p.and_then(|p| p.primary.clone()).unwrap_or_default(),
        standby_gateway: p.and_then(|p| p.standby.clone()).unwrap_or_default(),
        ipv6_ranges: v.ipv6_ranges.iter().map(|r| r.to_string()).collect(),
    }
}

pub fn pool_in(p: pb::Pool) -> Result<Pool, Status> {
    Ok(Pool {
        cidr: parse("pool.cidr", &p.cidr)?,
        name: p.name,
        site: p.site,
    })
}
pub fn pool_out(p: &Pool) -> pb::Pool {
    pb::Pool {
        name: p.name.clone(),
        cidr: p.cidr.to_string(),
        site: p.site.clone(),
    }
}

fn port(field: &str, p: u32) -> Result<u16, Status> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(field, format!("{p} is not a port (1-65535)")))
}

/// A NAT address: IPv4 only. IPv6 is routed (CloudStack's routed mode), never translated,
/// so an IPv6 address is refused with that reason rather than a parse error.
fn nat_v4(field: &str, s: &str) -> Result<std::net::Ipv4Addr, Status> {
    if s.trim().parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(invalid(
            field,
            format!("{s:?}: NAT is IPv4 only (IPv6 tiers are routed, not translated)"),
        ));
    }
    parse(field, s)
}

pub fn nat_in(r: pb::NatRule) -> Result<NatRule, Status> {
    use pb::nat_rule::Kind;
    let kind = match r.kind {
        Some(Kind::Snat(s)) => NatKind::Snat {
            public_ip: nat_v4("nat.public_ip", &s.public_ip)?,
        },
        Some(Kind::PortForward(f)) => NatKind::PortForward {
            public_ip: nat_v4("nat.public_ip", &f.public_ip)?,
            protocol: match f.protocol.as_str() {
                "tcp" => L4Protocol::Tcp,
                "udp" => L4Protocol::Udp,
                other => {
                    return Err(invalid(
                        "nat.protocol",
                        format!("{other:?} is not tcp or udp"),
                    ))
                }
            },
            public_port: port("nat.public_port", f.public_port)?,
            private_ip: nat_v4("nat.private_ip", &f.private_ip)?,
            private_port: port("nat.private_port", f.private_port)?,
        },
        Some(Kind::StaticNat(s)) => NatKind::StaticNat {
            public_ip: nat_v4("nat.public_ip", &s.public_ip)?,
            private_ip: nat_v4("nat.private_ip", &s.private_ip)?,
        },
        None => {
            return Err(invalid(
                "nat.kind",
                "none given (snat, port-forward or static-nat)",
            ))
        }
    };
    Ok(NatRule {
        tenant: r.tenant,
        vpc: r.vpc,
        name: r.name,
        kind,
    })
}

pub fn nat_out(r: &NatRule) -> pb::NatRule {
    use pb::nat_rule::Kind;
    let kind = match &r.kind {
        NatKind::Snat { public_ip } => Kind::Snat(pb::Snat {
            public_ip: public_ip.to_string(),
        }),
        NatKind::PortForward {
            public_ip,
            protocol,
            public_port,
            private_ip,
            private_port,
        } => Kind::PortForward(pb::PortForward {
            public_ip: public_ip.to_string(),
            protocol: match protocol {
                L4Protocol::Tcp => "tcp",
                L4Protocol::Udp => "udp",
            }
            .to_string(),
            public_port: *public_port as u32,
            private_ip: private_ip.to_string(),
            private_port: *private_port as u32,
        }),
        NatKind::StaticNat {
            public_ip,
            private_ip,
        } => Kind::StaticNat(pb::StaticNat {
            public_ip: public_ip.to_string(),
            private_ip: private_ip.to_string(),
        }),
    };
    pb::NatRule {
        tenant: r.tenant.clone(),
        vpc: r.vpc.clone(),
        name: r.name.clone(),
        kind: Some(kind),
    }
}

pub fn route_in(r: pb::Route) -> Result<StaticRoute, Status> {
    Ok(StaticRoute {
        prefix: parse("route.prefix", &r.prefix)?,
        nexthop: parse("route.nexthop", &r.nexthop)?,
        tenant: r.tenant,
        vpc: r.vpc,
        name: r.name,
    })
}
pub fn route_out(r: &StaticRoute) -> pb::Route {
    pb::Route {
        tenant: r.tenant.clone(),
        vpc: r.vpc.clone(),
        name: r.name.clone(),
        prefix: r.prefix.to_string(),
        nexthop: r.nexthop.to_string(),
    }
}

/// A network from the wire; an empty gateway becomes the first host address.
pub fn network_in(n: pb::Network) -> Result<Network, Status> {
    let cidr: ipnet::Ipv4Net = parse("network.cidr", &n.cidr)?;
    let gateway = if n.gateway.trim().is_empty() {
        sf_core::validate::default_gateway(cidr)
    } else {
        parse("network.gateway", &n.gateway)?
    };
    Ok(Network {
        tenant: n.tenant,
        vpc: n.vpc,
        name: n.name,
        cidr,
        vni: n.vni,
        gateway,
        ipv6_prefix: optional("network.ipv6_prefix", &n.ipv6_prefix)?,
    })
}

/// An optional field of the wire: empty means absent.
fn optional<T: std::str::FromStr>(field: &str, s: &str) -> Result<Option<T>, Status>
where
    T::Err: std::fmt::Display,
{
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse(field, s).map(Some)
}
pub fn network_out(n: &Network) -> pb::Network {
    pb::Network {
        tenant: n.tenant.clone(),
        vpc: n.vpc.clone(),
        name: n.name.clone(),
        cidr: n.cidr.to_string(),
        vni: n.vni,
        gateway: n.gateway.to_string(),
        ipv6_prefix: n.ipv6_prefix.map(|p| p.to_string()).unwrap_or_default(),
    }
}

fn attachment(
    what: &str,
    interface: &str,
    vlan: u32,
) -> Result<Option<sf_core::desired::SwitchAttachment>, Status> {
    if interface.trim().is_empty() {
        if vlan != 0 {
            return Err(invalid(
                &format!("{what}.interface"),
                "a VLAN needs an interface",
            ));
        }
        return Ok(None);
    }
    let vlan = match vlan {
        0 => None,
        v => Some(u16::try_from(v).map_err(|_| {
            invalid(
                &format!("{what}.vlan"),
                format!("{v} is not a VLAN id (1-4094)"),
            )
        })?),
    };
    Ok(Some(sf_core::desired::SwitchAttachment {
        interface: interface.trim().to_string(),
        vlan,
    }))
}

pub fn port_in(p: pb::PortBinding) -> Result<PortBinding, Status> {
    Ok(PortBinding {
        ip: parse("port.ip", &p.ip)?,
        ipv6: optional("port.ipv6", &p.ipv6)?,
        mac: (!p.mac.trim().is_empty()).then(|| p.mac.trim().to_lowercase()),
        attach: attachment("port", &p.interface, p.vlan)?,
        tenant: p.tenant,
        name: p.name,
        vpc: p.vpc,
        network: p.network,
        node: p.node,
    })
}
pub fn port_out(p: &PortBinding) -> pb::PortBinding {
    pb::PortBinding {
        tenant: p.tenant.clone(),
        name: p.name.clone(),
        vpc: p.vpc.clone(),
        network: p.network.clone(),
        node: p.node.clone(),
        ip: p.ip.to_string(),
        mac: p.mac.clone().unwrap_or_default(),
        interface: p
            .attach
            .as_ref()
            .map(|a| a.interface.clone())
            .unwrap_or_default(),
        vlan: p.attach.as_ref().and_then(|a| a.vlan).unwrap_or(0) as u32,
        ipv6: p.ipv6.map(|a| a.to_string()).unwrap_or_default(),
    }
}

/// Default ASN of the VPC side of a Direct Connect (as AWS's virtual private gateway).
pub const DEFAULT_DC_LOCAL_ASN: u32 = 64512;

pub fn dc_in(d: pb::DirectConnect) -> Result<sf_core::model::DirectConnect, Status> {
    let a = attachment("dc", &d.interface, d.vlan)?
        .ok_or_else(|| invalid("dc.interface", "the switch interface is required"))?;
    let accept = d
        .accept
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.parse()
                .map_err(|e: String| invalid(&format!("dc.accept[{i}]"), e))
        })
        .collect::<Result<_, _>>()?;
    Ok(sf_core::model::DirectConnect {
        local_address: parse("dc.local_address", &d.local_address)?,
        peer_address: parse("dc.peer_address", &d.peer_address)?,
        local_asn: if d.local_asn == 0 {
            DEFAULT_DC_LOCAL_ASN
        } else {
            d.local_asn
        },
        customer_asn: d.customer_asn,
        accept,
        tenant: d.tenant,
        vpc: d.vpc,
        name: d.name,
        switch: d.switch,
        interface: a.interface,
        vlan: a.vlan,
        vni: 0,
    })
}

/// A Direct Connect for the wire, with the BGP session as its serving gateway reports it.
pub fn dc_out(
    d: &sf_core::model::DirectConnect,
    view: &sf_store::intent::ClusterView,
) -> pb::DirectConnect {
    let gateway = view
        .intent
        .placements
        .get(&VpcRef::new(&d.tenant, &d.vpc))
        .and_then(|p| p.primary.clone())
        .unwrap_or_default();
    let status = view
        .nodes
        .get(&gateway)
        .filter(|n| n.alive)
        .and_then(|n| n.status.as_ref())
        .and_then(|s| {
            s.direct_connects
                .get(&format!("{}/{}/{}", d.tenant, d.vpc, d.name))
                .cloned()
        });
    pb::DirectConnect {
        tenant: d.tenant.clone(),
        vpc: d.vpc.clone(),
        name: d.name.clone(),
        switch: d.switch.clone(),
        interface: d.interface.clone(),
        vlan: d.vlan.unwrap_or(0) as u32,
        local_address: d.local_address.to_string(),
        peer_address: d.peer_address.to_string(),
        local_asn: d.local_asn,
        customer_asn: d.customer_asn,
        accept: d.accept.iter().map(|a| a.to_string()).collect(),
        vni: d.vni,
        gateway,
        bgp_state: status
            .as_ref()
            .map(|s| s.state.clone())
            .unwrap_or_else(|| "unknown".into()),
        prefixes_received: status.as_ref().map(|s| s.received).unwrap_or(0),
        prefixes_accepted: status.as_ref().map(|s| s.accepted).unwrap_or(0),
        prefixes_sent: status.as_ref().map(|s| s.sent).unwrap_or(0),
    }
}

pub fn node_in(n: pb::Node) -> Result<Node, Status> {
    let role: NodeRole = n
        .role
        .parse()
        .map_err(|e: String| invalid("node.role", e))?;
    Ok(Node {
        name: n.name,
        role,
        site: n.site,
        asn: n.asn,
        loopback: parse("node.loopback", &n.loopback)?,
        fabric_ports: n.fabric_ports,
    })
}
pub fn node_out(n: &Node) -> pb::Node {
    pb::Node {
        name: n.name.clone(),
        role: n.role.as_str().to_string(),
        site: n.site.clone(),
        asn: n.asn,
        loopback: n.loopback.to_string(),
        fabric_ports: n.fabric_ports.clone(),
    }
}

/// A load balancer from the wire, with defaults: weight 1, table size 65537, health "none".
pub fn lb_in(l: pb::LoadBalancer) -> Result<sf_core::model::LoadBalancer, Status> {
    use sf_core::desired::HealthCheck;
    let protocol = match l.protocol.as_str() {
        "tcp" | "" => L4Protocol::Tcp,
        "udp" => L4Protocol::Udp,
        other => {
            return Err(invalid(
                "lb.protocol",
                format!("{other:?} is not tcp or udp"),
            ))
        }
    };
    let port = u16::try_from(l.port)
        .map_err(|_| invalid("lb.port", format!("{} is not a port (1-65535)", l.port)))?;
    let backends = l
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Ok(sf_core::model::Backend {
                ip: parse(&format!("lb.backends[{i}].ip"), &b.ip)?,
                port: u16::try_from(b.port).map_err(|_| {
                    invalid(
                        &format!("lb.backends[{i}].port"),
                        format!("{} is not a port", b.port),
                    )
                })?,
                weight: if b.weight == 0 { 1 } else { b.weight },
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    let (interval_ms, timeout_ms, rise, fall) = (
        or(l.interval_ms, 2000),
        or(l.timeout_ms, 1000),
        or(l.rise, 2),
        or(l.fall, 3),
    );
    let health = match l.health_type.as_str() {
        "none" | "" => HealthCheck::None,
        "tcp" => HealthCheck::Tcp {
            interval_ms,
            timeout_ms,
            rise,
            fall,
        },
        "http" => HealthCheck::Http {
            path: if l.health_path.is_empty() {
                "/".into()
            } else {
                l.health_path
            },
            expect_status: u16::try_from(or(l.health_expect_status, 200))
                .map_err(|_| invalid("lb.health.expect_status", "is not an HTTP status"))?,
            interval_ms,
            timeout_ms,
            rise,
            fall,
        },
        other => {
            return Err(invalid(
                "lb.health.type",
                format!("{other:?} is not none, tcp or http"),
            ))
        }
    };
    Ok(sf_core::model::LoadBalancer {
        tenant: l.tenant,
        vpc: l.vpc,
        name: l.name,
        vip: parse("lb.vip", &l.vip)?,
        protocol,
        port,
        backends,
        health,
        table_size: or(l.table_size, sf_core::maglev::DEFAULT_TABLE_SIZE),
        source_cidrs: l
            .source_cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| parse(&format!("lb.source_cidrs[{i}]"), c))
            .collect::<Result<_, _>>()?,
    })
}

/// A backend's health as the serving gateway reports it: "up", "down", or "unknown" (no
/// report, or UP by default: it takes connections but no check has vouched for it yet).
fn backend_health(status: Option<&sf_core::status::LbStatus>, name: &str) -> &'static str {
    match status.map(|s| (s.backends.get(name), s.unverified.contains(name))) {
        Some((Some(true), false)) => "up",
        Some((Some(false), _)) => "down",
        _ => "unknown",
    }
}

/// A load balancer for the wire, with health and table digest from the serving gateway.
pub fn lb_out(
    l: &sf_core::model::LoadBalancer,
    view: &sf_store::intent::ClusterView,
) -> pb::LoadBalancer {
    use sf_core::desired::HealthCheck;
    let gateway = view
        .intent
        .placements
        .get(&VpcRef::new(&l.tenant, &l.vpc))
        .and_then(|p| p.primary.clone())
        .unwrap_or_default();
    let status = view
        .nodes
        .get(&gateway)
        .filter(|n| n.alive)
        .and_then(|n| n.status.as_ref())
        .and_then(|s| {
            s.load_balancers
                .get(&format!("{}/{}/{}", l.tenant, l.vpc, l.name))
                .cloned()
        });
    let mut out = pb::LoadBalancer {
        tenant: l.tenant.clone(),
        vpc: l.vpc.clone(),
        name: l.name.clone(),
        vip: l.vip.to_string(),
        protocol: match l.protocol {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
        }
        .into(),
        port: l.port as u32,
        backends: l
            .backends
            .iter()
            .map(|b| {
                // The gateway's backend name: "ip:port", "[ip]:port" for IPv6.
                let name = std::net::SocketAddr::new(b.ip, b.port).to_string();
                let health = backend_health(status.as_ref(), &name);
                pb::Backend {
                    ip: b.ip.to_string(),
                    port: b.port as u32,
                    weight: b.weight,
                    health: health.into(),
                }
            })
            .collect(),
        table_size: l.table_size,
        source_cidrs: l.source_cidrs.iter().map(|c| c.to_string()).collect(),
        gateway,
        table_digest: status.map(|s| s.table_digest).unwrap_or_default(),
        health_type: "none".into(),
        ..Default::default()
    };
    match &l.health {
        HealthCheck::None => {}
        HealthCheck::Tcp {
            interval_ms,
            timeout_ms,
            rise,
            fall,
        } => {
            out.health_type = "tcp".into();
            (out.interval_ms, out.timeout_ms, out.rise, out.fall) =
                (*interval_ms, *timeout_ms, *rise, *fall);
        }
        HealthCheck::Http {
            path,
            expect_status,
            interval_ms,
            timeout_ms,
            rise,
            fall,
        } => {
            out.health_type = "http".into();
            out.health_path = path.clone();
            out.health_expect_status = *expect_status as u32;
            (out.interval_ms, out.timeout_ms, out.rise, out.fall) =
                (*interval_ms, *timeout_ms, *rise, *fall);
        }
    }
    out
}

/// An ACL list from the wire.
pub fn acl_in(l: pb::AclList) -> Result<sf_core::model::AclList, Status> {
    use sf_core::desired::{AclAction, AclProtocol, AclRule};
    use sf_core::model::{AclListRule, Direction};
    let action = |field: &str, s: &str| match s {
        "allow" | "permit" => Ok(AclAction::Allow),
        "deny" => Ok(AclAction::Deny),
        other => Err(invalid(field, format!("{other:?} is not allow or deny"))),
    };
    let rules = l
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |x: &str| format!("acl.rules[{i}].{x}");
            let direction = match r.direction.as_str() {
                "ingress" => Direction::Ingress,
                "egress" => Direction::Egress,
                other => {
                    return Err(invalid(
                        &f("direction"),
                        format!("{other:?} is not ingress or egress"),
                    ))
                }
            };
            let protocol = match r.protocol.as_str() {
                "all" | "" => AclProtocol::All,
                "tcp" => AclProtocol::Tcp,
                "udp" => AclProtocol::Udp,
                "icmp" => AclProtocol::Icmp,
                "icmpv6" => AclProtocol::Icmpv6,
                other => {
                    return Err(invalid(
                        &f("protocol"),
                        format!("{other:?} is not all, tcp, udp, icmp or icmpv6"),
                    ))
                }
            };
            let port = |field: &str, p: u32| {
                u16::try_from(p).map_err(|_| invalid(&f(field), format!("{p} is not a port")))
            };
            let ports = if r.port_start == 0 && r.port_end == 0 {
                None
            } else {
                let start = port("ports", r.port_start)?;
                let end = if r.port_end == 0 {
                    start
                } else {
                    port("ports", r.port_end)?
                };
                Some((start, end))
            };
            let icmp = |field: &str, v: i32| -> Result<Option<u8>, Status> {
                if v < 0 {
                    Ok(None)
                } else {
                    u8::try_from(v)
                        .map(Some)
                        .map_err(|_| invalid(&f(field), format!("{v} is not 0-255")))
                }
            };
            let cidrs = r
                .cidrs
                .iter()
                .enumerate()
                .map(|(j, c)| parse(&format!("acl.rules[{i}].cidrs[{j}]"), c))
                .collect::<Result<Vec<_>, Status>>()?;
            Ok(AclListRule {
                direction,
                rule: AclRule {
                    number: r.number,
                    action: action(&f("action"), &r.action)?,
                    protocol,
                    ports,
                    icmp_type: icmp("icmp_type", r.icmp_type)?,
                    icmp_code: icmp("icmp_code", r.icmp_code)?,
                    cidrs,
                },
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(sf_core::model::AclList {
        default_action: action("acl.default_action", &l.default_action)?,
        tenant: l.tenant,
        vpc: l.vpc,
        name: l.name,
        rules,
        tiers: l.tiers,
    })
}

pub fn acl_out(l: &sf_core::model::AclList) -> pb::AclList {
    use sf_core::desired::{AclAction, AclProtocol};
    use sf_core::model::Direction;
    let act = |a: AclAction| match a {
        AclAction::Allow => "allow",
        AclAction::Deny => "deny",
    };
    pb::AclList {
        tenant: l.tenant.clone(),
        vpc: l.vpc.clone(),
        name: l.name.clone(),
        default_action: act(l.default_action).into(),
        tiers: l.tiers.clone(),
        rules: l
            .rules
            .iter()
            .map(|r| pb::AclRule {
                number: r.rule.number,
                direction: match r.direction {
                    Direction::Ingress => "ingress",
                    Direction::Egress => "egress",
                }
                .into(),
                action: act(r.rule.action).into(),
                protocol: match r.rule.protocol {
                    AclProtocol::All => "all",
                    AclProtocol::Tcp => "tcp",
                    AclProtocol::Udp => "udp",
                    AclProtocol::Icmp => "icmp",
                    AclProtocol::Icmpv6 => "icmpv6",
                }
                .into(),
                port_start: r.rule.ports.map(|p| p.0 as u32).unwrap_or(0),
                port_end: r.rule.ports.map(|p| p.1 as u32).unwrap_or(0),
                icmp_type: r.rule.icmp_type.map(i32::from).unwrap_or(-1),
                icmp_code: r.rule.icmp_code.map(i32::from).unwrap_or(-1),
                cidrs: r.rule.cidrs.iter().map(|c| c.to_string()).collect(),
            })
            .collect(),
    }
}

/// A node's reported BGP session in the API's shape.
pub fn bgp_session(s: &sf_core::status::BgpSession) -> pb::BgpSession {
    pb::BgpSession {
        peer: s.peer.clone(),
        hostname: s.hostname.clone(),
        remote_as: s.remote_as,
        state: s.state.clone(),
        established_epoch: s.established_epoch,
        prefixes: s
            .prefixes
            .iter()
            .map(|(family, c)| pb::BgpPrefixCounts {
                family: family.clone(),
                received: c.received,
                sent: c.sent,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: NatKind) -> NatRule {
        NatRule {
            tenant: "demo".into(),
            vpc: "blue".into(),
            name: "r1".into(),
            kind,
        }
    }

    #[test]
    fn an_unverified_backend_shows_unknown() {
        let status = sf_core::status::LbStatus {
            table_digest: "d".into(),
            backends: [("a:80", true), ("b:80", false), ("c:80", true)]
                .into_iter()
                .map(|(n, up)| (n.to_string(), up))
                .collect(),
            unverified: ["c:80".to_string()].into(),
        };
        let h = |n| backend_health(Some(&status), n);
        assert_eq!((h("a:80"), h("b:80"), h("c:80")), ("up", "down", "unknown"));
        assert_eq!(h("z:80"), "unknown", "not reported");
        assert_eq!(backend_health(None, "a:80"), "unknown");
    }

    /// Every NAT kind crosses the API's oneof and comes back the same.
    #[test]
    fn nat_kinds_round_trip_through_the_oneof() {
        let public_ip = "203.0.113.10".parse().unwrap();
        let private_ip = "10.10.1.11".parse().unwrap();
        for kind in [
            NatKind::Snat { public_ip },
            NatKind::PortForward {
                public_ip,
                protocol: L4Protocol::Udp,
                public_port: 5353,
                private_ip,
                private_port: 53,
            },
            NatKind::StaticNat {
                public_ip,
                private_ip,
            },
        ] {
            let r = rule(kind);
            assert_eq!(nat_in(nat_out(&r)).unwrap(), r);
        }
    }

    #[test]
    fn a_rule_without_a_kind_is_refused_on_its_field() {
        let mut wire = nat_out(&rule(NatKind::Snat {
            public_ip: "203.0.113.10".parse().unwrap(),
        }));
        wire.kind = None;
        let e = nat_in(wire).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().starts_with("invalid nat.kind:"),
            "{}",
            e.message()
        );
    }

    /// The IPv6 fields of VPCs, tiers and ports cross the API and come back the same; empty
    /// wire strings (old clients) mean IPv4 only.
    #[test]
    fn ipv6_fields_round_trip_and_default_to_ipv4_only() {
        let vpc = Vpc {
            tenant: "demo".into(),
            name: "blue".into(),
            cidr: "10.10.0.0/16".parse().unwrap(),
            site: "lab".into(),
            id: 0,
            ipv6_ranges: vec!["2001:db8:100::/56".parse().unwrap()],
        };
        assert_eq!(vpc_in(vpc_out(&vpc, None)).unwrap(), vpc);
        let net = Network {
            tenant: "demo".into(),
            vpc: "blue".into(),
            name: "web".into(),
            cidr: "10.10.1.0/24".parse().unwrap(),
            vni: 1_000_001,
            gateway: "10.10.1.1".parse().unwrap(),
            ipv6_prefix: Some("2001:db8:100:1::/64".parse().unwrap()),
        };
        let wire = network_out(&net);
        assert_eq!(wire.ipv6_prefix, "2001:db8:100:1::/64");
        assert_eq!(network_in(wire).unwrap(), net);
        let old = pb::Network {
            ipv6_prefix: String::new(),
            ..network_out(&net)
        };
        assert_eq!(network_in(old).unwrap().ipv6_prefix, None);
        let port = PortBinding {
            tenant: "demo".into(),
            name: "web-1".into(),
            vpc: "blue".into(),
            network: "web".into(),
            node: "hv1".into(),
            ip: "10.10.1.11".parse().unwrap(),
            ipv6: Some("2001:db8:100:1::11".parse().unwrap()),
            mac: None,
            attach: None,
        };
        assert_eq!(port_in(port_out(&port)).unwrap(), port);
    }

    #[test]
    fn malformed_ipv6_fields_are_refused_on_their_field() {
        let bad_vpc = pb::Vpc {
            cidr: "10.10.0.0/16".into(),
            ipv6_ranges: vec!["2001:db8::/48".into(), "2001:db8::zz/48".into()],
            ..Default::default()
        };
        let e = vpc_in(bad_vpc).unwrap_err();
        assert!(
            e.message().starts_with("invalid vpc.ipv6_ranges[1]:"),
            "{}",
            e.message()
        );
        let bad_net = pb::Network {
            cidr: "10.10.1.0/24".into(),
            ipv6_prefix: "10.10.1.0/24".into(),
            ..Default::default()
        };
        let e = network_in(bad_net).unwrap_err();
        assert!(
            e.message().starts_with("invalid network.ipv6_prefix:"),
            "{}",
            e.message()
        );
        let bad_port = pb::PortBinding {
            ip: "10.10.1.11".into(),
            ipv6: "2001:db8::1::2".into(),
            ..Default::default()
        };
        let e = port_in(bad_port).unwrap_err();
        assert!(
            e.message().starts_with("invalid port.ipv6:"),
            "{}",
            e.message()
        );
    }

    /// NAT stays IPv4: an IPv6 public or private address is refused naming its field and why.
    #[test]
    fn nat_refuses_ipv6_naming_the_field() {
        let mut wire = nat_out(&rule(NatKind::StaticNat {
            public_ip: "203.0.113.10".parse().unwrap(),
            private_ip: "10.10.1.11".parse().unwrap(),
        }));
        let Some(pb::nat_rule::Kind::StaticNat(s)) = wire.kind.as_mut() else {
            unreachable!()
        };
        s.private_ip = "2001:db8:100:1::11".into();
        let e = nat_in(wire.clone()).unwrap_err();
        assert!(
            e.message().starts_with("invalid nat.private_ip:"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("IPv4 only"), "{}", e.message());
        let Some(pb::nat_rule::Kind::StaticNat(s)) = wire.kind.as_mut() else {
            unreachable!()
        };
        s.private_ip = "10.10.1.11".into();
        s.public_ip = "2001:db8::10".into();
        let e = nat_in(wire).unwrap_err();
        assert!(
            e.message().starts_with("invalid nat.public_ip:"),
            "{}",
            e.message()
        );
    }
}
