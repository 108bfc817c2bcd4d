//! Rendering of results: the aligned table formatter, per-type table rows, hand-written
//! prost-to-JSON conversions (YAML is the same document), `-o name` lines (`KIND/NAME`), and
//! the one-line write confirmations. Functions here return strings; printing is left to
//! `commands`.
use serde_json::{json, Value};
use sf_proto::v1::{
    AclList, BgpSession, DirectConnect, FleetStatus, LoadBalancer, NatRule, Network, Node,
    NodeStatus, Placement, PlacementList, Pool, PortBinding, Route, Tenant, Vpc,
};

use crate::cli::Output;

/// How to render: the format and, for tables, whether to print the header line
/// (`--no-headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fmt {
    pub out: Output,
    pub headers: bool,
}

impl From<Output> for Fmt {
    fn from(out: Output) -> Self {
        Fmt { out, headers: true }
    }
}

/// A table under `fmt`: with or without its header line.
fn grid(fmt: Fmt, headers: &[&str], rows: &[Vec<String>]) -> String {
    let t = table(headers, rows);
    if fmt.headers {
        t
    } else {
        t.split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default()
    }
}

/// A JSON value as a document of `fmt`: pretty JSON, or YAML.
fn doc(fmt: Fmt, v: &Value) -> String {
    match fmt.out {
        Output::Yaml => serde_yaml_ng::to_string(v).unwrap_or_else(|e| format!("# {e}\n")),
        _ => pretty(v),
    }
}

/// `KIND/NAME` lines, as `kubectl get -o name` prints them.
fn names<'a>(kind: &str, items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().map(|n| format!("{kind}/{n}\n")).collect()
}

/// Formats rows under a header, each column padded to its widest cell and separated by two
/// spaces. Trailing padding is trimmed; every line ends with a newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(cur) => *cur = (*cur).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Shows empty strings as "-" so table columns never look shifted.
fn cell(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// A printable object type: its kind (as sfctl's subcommand names it), its name, its table
/// header, one table row, and its JSON form.
pub trait Render {
    const KIND: &'static str;
    const HEADERS: &'static [&'static str];
    fn name(&self) -> &str;
    fn row(&self) -> Vec<String>;
    fn to_json(&self) -> Value;
}

impl Render for Tenant {
    const KIND: &'static str = "tenant";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] = &["NAME", "DESCRIPTION"];
    fn row(&self) -> Vec<String> {
        vec![cell(&self.name), cell(&self.description)]
    }
    fn to_json(&self) -> Value {
        json!({"name": self.name, "description": self.description})
    }
}

impl Render for Vpc {
    const KIND: &'static str = "vpc";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] =
        &["TENANT", "NAME", "CIDR", "SITE", "ID", "GATEWAY", "STANDBY"];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.tenant),
            cell(&self.name),
            cell(&self.cidr),
            cell(&self.site),
            self.id.to_string(),
            cell(&self.primary_gateway),
            cell(&self.standby_gateway),
        ]
    }
    fn to_json(&self) -> Value {
        let mut v = json!({"tenant": self.tenant, "name": self.name, "cidr": self.cidr,
               "site": self.site, "id": self.id, "primary_gateway": self.primary_gateway,
               "standby_gateway": self.standby_gateway});
        if !self.ipv6_ranges.is_empty() {
            v["ipv6_ranges"] = json!(self.ipv6_ranges);
        }
        v
    }
}

impl Render for Pool {
    const KIND: &'static str = "pool";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] = &["NAME", "CIDR", "SITE"];
    fn row(&self) -> Vec<String> {
        vec![cell(&self.name), cell(&self.cidr), cell(&self.site)]
    }
    fn to_json(&self) -> Value {
        json!({"name": self.name, "cidr": self.cidr, "site": self.site})
    }
}

/// A NAT rule as sfctl has always shown it: flat, with the kind's name and every field (empty
/// or 0 where the kind has none).
#[derive(Default)]
struct FlatNat<'a> {
    kind: &'static str,
    public_ip: &'a str,
    protocol: &'a str,
    public_port: u32,
    private_ip: &'a str,
    private_port: u32,
}

fn flat_nat(r: &NatRule) -> FlatNat<'_> {
    use sf_proto::v1::nat_rule::Kind;
    match &r.kind {
        Some(Kind::Snat(s)) => FlatNat {
            kind: "snat",
            public_ip: &s.public_ip,
            ..Default::default()
        },
        Some(Kind::PortForward(f)) => FlatNat {
            kind: "port-forward",
            public_ip: &f.public_ip,
            protocol: &f.protocol,
            public_port: f.public_port,
            private_ip: &f.private_ip,
            private_port: f.private_port,
        },
        Some(Kind::StaticNat(s)) => FlatNat {
            kind: "static-nat",
            public_ip: &s.public_ip,
            private_ip: &s.private_ip,
            ..Default::default()
        },
        None => FlatNat::default(),
    }
}

impl Render for NatRule {
    const KIND: &'static str = "nat";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] =
        &["TENANT", "VPC", "NAME", "KIND", "PUBLIC", "PRIVATE"];
    fn row(&self) -> Vec<String> {
        let f = flat_nat(self);
        let (public, private) = match f.kind {
            "port-forward" => (
                format!("{}:{}/{}", f.public_ip, f.public_port, f.protocol),
                format!("{}:{}", f.private_ip, f.private_port),
            ),
            _ => (f.public_ip.to_string(), f.private_ip.to_string()),
        };
        vec![
            cell(&self.tenant),
            cell(&self.vpc),
            cell(&self.name),
            cell(f.kind),
            cell(&public),
            cell(&private),
        ]
    }
    fn to_json(&self) -> Value {
        let f = flat_nat(self);
        json!({"tenant": self.tenant, "vpc": self.vpc, "name": self.name, "kind": f.kind,
               "public_ip": f.public_ip, "protocol": f.protocol,
               "public_port": f.public_port, "private_ip": f.private_ip,
               "private_port": f.private_port})
    }
}

impl Render for Route {
    const KIND: &'static str = "route";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] = &["TENANT", "VPC", "NAME", "PREFIX", "NEXTHOP"];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.tenant),
            cell(&self.vpc),
            cell(&self.name),
            cell(&self.prefix),
            cell(&self.nexthop),
        ]
    }
    fn to_json(&self) -> Value {
        json!({"tenant": self.tenant, "vpc": self.vpc, "name": self.name,
               "prefix": self.prefix, "nexthop": self.nexthop})
    }
}

impl Render for Placement {
    const KIND: &'static str = "vpc";
    fn name(&self) -> &str {
        &self.vpc
    }
    const HEADERS: &'static [&'static str] = &["TENANT", "VPC", "ID", "PRIMARY", "STANDBY"];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.tenant),
            cell(&self.vpc),
            self.vpc_id.to_string(),
            cell(&self.primary),
            cell(&self.standby),
        ]
    }
    fn to_json(&self) -> Value {
        json!({"tenant": self.tenant, "vpc": self.vpc, "vpc_id": self.vpc_id,
               "primary": self.primary, "standby": self.standby})
    }
}

impl Render for LoadBalancer {
    const KIND: &'static str = "lb";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] = &[
        "TENANT", "VPC", "NAME", "VIP", "BACKENDS", "HEALTH", "GATEWAY", "TABLE",
    ];
    fn row(&self) -> Vec<String> {
        let up = self.backends.iter().filter(|b| b.health == "up").count();
        vec![
            cell(&self.tenant),
            cell(&self.vpc),
            cell(&self.name),
            format!("{}/{}", host_port(&self.vip, self.port), self.protocol),
            format!("{up}/{} up", self.backends.len()),
            cell(&self.health_type),
            cell(&self.gateway),
            cell(&self.table_digest),
        ]
    }
    fn to_json(&self) -> Value {
        json!({"tenant": self.tenant, "vpc": self.vpc, "name": self.name, "vip": self.vip,
               "protocol": self.protocol, "port": self.port,
               "backends": self.backends.iter().map(|b| json!({"ip": b.ip, "port": b.port,
                   "weight": b.weight, "health": b.health})).collect::<Vec<_>>(),
               "health": {"type": self.health_type, "path": self.health_path,
                          "expect_status": self.health_expect_status,
                          "interval_ms": self.interval_ms, "timeout_ms": self.timeout_ms,
                          "rise": self.rise, "fall": self.fall},
               "table_size": self.table_size, "source_cidrs": self.source_cidrs,
               "gateway": self.gateway, "table_digest": self.table_digest})
    }
}

impl Render for AclList {
    const KIND: &'static str = "acl";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] =
        &["TENANT", "VPC", "NAME", "DEFAULT", "TIERS", "RULES"];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.tenant),
            cell(&self.vpc),
            cell(&self.name),
            cell(&self.default_action),
            cell(&self.tiers.join(",")),
            self.rules.len().to_string(),
        ]
    }
    fn to_json(&self) -> Value {
        json!({"tenant": self.tenant, "vpc": self.vpc, "name": self.name,
               "default_action": self.default_action, "tiers": self.tiers,
               "rules": self.rules.iter().map(|r| json!({"number": r.number,
                   "direction": r.direction, "action": r.action, "protocol": r.protocol,
                   "port_start": r.port_start, "port_end": r.port_end,
                   "icmp_type": r.icmp_type, "icmp_code": r.icmp_code, "cidrs": r.cidrs}))
                   .collect::<Vec<_>>()})
    }
}

/// One ACL list with a row per rule.
pub fn acl_detail(fmt: impl Into<Fmt>, l: &AclList) -> String {
    let fmt = fmt.into();
    match fmt.out {
        Output::Json | Output::Yaml => doc(fmt, &l.to_json()),
        Output::Name => names(AclList::KIND, [l.name()]),
        Output::Table => {
            let rows: Vec<Vec<String>> = l
                .rules
                .iter()
                .map(|r| {
                    let ports = if r.protocol == "icmp" {
                        match (r.icmp_type, r.icmp_code) {
                            (-1, _) => "any".to_string(),
                            (t, -1) => format!("type {t}"),
                            (t, c) => format!("{t}/{c}"),
                        }
                    } else if r.port_start == 0 {
                        "any".to_string()
                    } else {
                        format!("{}-{}", r.port_start, r.port_end)
                    };
                    vec![
                        r.number.to_string(),
                        r.direction.clone(),
                        r.action.clone(),
                        r.protocol.clone(),
                        ports,
                        r.cidrs.join(","),
                    ]
                })
                .collect();
            format!(
                "{}{}",
                grid(fmt, AclList::HEADERS, &[l.row()]),
                grid(
                    fmt,
                    &[
                        "NUMBER",
                        "DIRECTION",
                        "ACTION",
                        "PROTOCOL",
                        "PORTS",
                        "CIDRS"
                    ],
                    &rows
                )
            )
        }
    }
}

/// One load balancer with a row per backend.
pub fn lb_detail(fmt: impl Into<Fmt>, l: &LoadBalancer) -> String {
    let fmt = fmt.into();
    match fmt.out {
        Output::Json | Output::Yaml => doc(fmt, &l.to_json()),
        Output::Name => names(LoadBalancer::KIND, [l.name()]),
        Output::Table => {
            let rows: Vec<Vec<String>> = l
                .backends
                .iter()
                .map(|b| {
                    vec![
                        host_port(&b.ip, b.port),
                        b.weight.to_string(),
                        cell(&b.health),
                    ]
                })
                .collect();
            let sources = if l.source_cidrs.is_empty() {
                "any".to_string()
            } else {
                l.source_cidrs.join(", ")
            };
            format!(
                "{}\ngateway {}  table {} (M={})  check {}\nsources {sources}\n{}",
                grid(fmt, LoadBalancer::HEADERS, &[l.row()]).trim_end(),
                cell(&l.gateway),
                cell(&l.table_digest),
                l.table_size,
                cell(&l.health_type),
                grid(fmt, &["BACKEND", "WEIGHT", "HEALTH"], &rows)
            )
        }
    }
}

/// Gateway placement, with the drained gateways on a header line.
pub fn placements(fmt: impl Into<Fmt>, l: &PlacementList) -> String {
    let fmt = fmt.into();
    match fmt.out {
        Output::Json | Output::Yaml => doc(
            fmt,
            &json!({"drained": l.drained,
                    "vpcs": l.items.iter().map(Render::to_json).collect::<Vec<_>>()}),
        ),
        Output::Name => names(Placement::KIND, l.items.iter().map(Render::name)),
        Output::Table => {
            let drained = if l.drained.is_empty() {
                "-".to_string()
            } else {
                l.drained.join(", ")
            };
            let rows: Vec<Vec<String>> = l.items.iter().map(Render::row).collect();
            format!(
                "drained: {drained}\n{}",
                grid(fmt, Placement::HEADERS, &rows)
            )
        }
    }
}

impl Render for Network {
    const KIND: &'static str = "network";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] = &["TENANT", "VPC", "NAME", "CIDR", "VNI", "GATEWAY"];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.tenant),
            cell(&self.vpc),
            cell(&self.name),
            cell(&self.cidr),
            self.vni.to_string(),
            cell(&self.gateway),
        ]
    }
    fn to_json(&self) -> Value {
        let v = json!({
            "tenant": self.tenant,
            "vpc": self.vpc,
            "name": self.name,
            "cidr": self.cidr,
            "vni": self.vni,
            "gateway": self.gateway,
        });
        with_ipv6(v, "ipv6_prefix", &self.ipv6_prefix)
    }
}

/// `v` with `key: value` added when the value is set: IPv4-only objects print the JSON they
/// always did, so scripts comparing it keep working.
fn with_ipv6(mut v: Value, key: &str, value: &str) -> Value {
    if !value.is_empty() {
        v[key] = json!(value);
    }
    v
}

/// "swp5", "swp5.100" or "" (VM port).
fn attachment_cell(interface: &str, vlan: u32) -> String {
    match (interface, vlan) {
        ("", _) => "-".into(),
        (i, 0) => i.into(),
        (i, v) => format!("{i}.{v}"),
    }
}

impl Render for PortBinding {
    const KIND: &'static str = "port";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] = &[
        "TENANT",
        "NAME",
        "VPC",
        "NETWORK",
        "NODE",
        "INTERFACE",
        "IP",
        "MAC",
    ];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.tenant),
            cell(&self.name),
            cell(&self.vpc),
            cell(&self.network),
            cell(&self.node),
            attachment_cell(&self.interface, self.vlan),
            cell(&self.ip),
            cell(&self.mac),
        ]
    }
    fn to_json(&self) -> Value {
        let v = json!({
            "tenant": self.tenant,
            "name": self.name,
            "vpc": self.vpc,
            "network": self.network,
            "node": self.node,
            "interface": self.interface,
            "vlan": self.vlan,
            "ip": self.ip,
            "mac": self.mac,
        });
        with_ipv6(v, "ipv6", &self.ipv6)
    }
}

impl Render for DirectConnect {
    const KIND: &'static str = "dc";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] = &[
        "TENANT", "VPC", "NAME", "SWITCH", "PORT", "VNI", "PEER", "ASN", "GATEWAY", "BGP", "RCVD",
        "ACCEPTED", "SENT",
    ];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.tenant),
            cell(&self.vpc),
            cell(&self.name),
            cell(&self.switch),
            attachment_cell(&self.interface, self.vlan),
            self.vni.to_string(),
            cell(&self.peer_address),
            self.customer_asn.to_string(),
            cell(&self.gateway),
            cell(&self.bgp_state),
            self.prefixes_received.to_string(),
            self.prefixes_accepted.to_string(),
            self.prefixes_sent.to_string(),
        ]
    }
    fn to_json(&self) -> Value {
        json!({
            "tenant": self.tenant,
            "vpc": self.vpc,
            "name": self.name,
            "switch": self.switch,
            "interface": self.interface,
            "vlan": self.vlan,
            "local_address": self.local_address,
            "peer_address": self.peer_address,
            "local_asn": self.local_asn,
            "customer_asn": self.customer_asn,
            "accept": self.accept,
            "vni": self.vni,
            "gateway": self.gateway,
            "bgp_state": self.bgp_state,
            "prefixes_received": self.prefixes_received,
            "prefixes_accepted": self.prefixes_accepted,
            "prefixes_sent": self.prefixes_sent,
        })
    }
}

impl Render for Node {
    const KIND: &'static str = "node";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] =
        &["NAME", "ROLE", "SITE", "ASN", "LOOPBACK", "FABRIC-PORTS"];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.name),
            cell(&self.role),
            cell(&self.site),
            self.asn.to_string(),
            cell(&self.loopback),
            cell(&self.fabric_ports.join(",")),
        ]
    }
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "role": self.role,
            "site": self.site,
            "asn": self.asn,
            "loopback": self.loopback,
            "fabric_ports": self.fabric_ports,
        })
    }
}

impl Render for NodeStatus {
    const KIND: &'static str = "node";
    fn name(&self) -> &str {
        &self.name
    }
    const HEADERS: &'static [&'static str] = &[
        "NODE", "ROLE", "LEASE", "APPLIED", "DESIRED", "SYNC", "BGP", "ERRORS",
    ];
    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.name),
            cell(&self.role),
            cell(&self.lease),
            self.applied_revision.to_string(),
            self.desired_revision.to_string(),
            if self.in_sync { "yes" } else { "no" }.to_string(),
            bgp_cell(self),
            cell(&self.errors.join("; ")),
        ]
    }
    fn to_json(&self) -> Value {
        // The agent's raw document is embedded parsed; if it is not valid JSON keep the text.
        let status = if self.status_json.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.status_json)
                .unwrap_or_else(|_| Value::String(self.status_json.clone()))
        };
        json!({
            "name": self.name,
            "role": self.role,
            "lease": self.lease,
            "applied_revision": self.applied_revision,
            "desired_revision": self.desired_revision,
            "in_sync": self.in_sync,
            "errors": self.errors,
            "bgp_sessions": self.bgp_sessions.iter().map(bgp_json).collect::<Vec<_>>(),
            "bgp_error": self.bgp_error,
            "status": status,
        })
    }
}

/// The status table's BGP cell: sessions Established of those reported ("2/2"), "?" when
/// the agent could not read FRR, "-" when it reports none.
fn bgp_cell(n: &NodeStatus) -> String {
    if !n.bgp_error.is_empty() {
        return "?".into();
    }
    if n.bgp_sessions.is_empty() {
        return "-".into();
    }
    let up = n
        .bgp_sessions
        .iter()
        .filter(|s| s.state == "Established")
        .count();
    format!("{up}/{}", n.bgp_sessions.len())
}

fn bgp_json(s: &BgpSession) -> Value {
    let prefixes: serde_json::Map<String, Value> = s
        .prefixes
        .iter()
        .map(|p| {
            (
                p.family.clone(),
                json!({"received": p.received, "sent": p.sent}),
            )
        })
        .collect();
    json!({
        "peer": s.peer,
        "hostname": s.hostname,
        "remote_as": s.remote_as,
        "state": s.state,
        "established_epoch": s.established_epoch,
        "prefixes": prefixes,
    })
}

/// One row per BGP session of the nodes in `status` (`sfctl bgp`): the node, its peer, the
/// peer's hostname, state, and prefixes received/sent summed over the address families.
pub fn bgp_sessions(fmt: impl Into<Fmt>, status: &FleetStatus) -> String {
    let fmt = fmt.into();
    match fmt.out {
        Output::Json | Output::Yaml => {
            let rows: Vec<Value> = status
                .nodes
                .iter()
                .flat_map(|n| {
                    n.bgp_sessions.iter().map(|s| {
                        let mut v = bgp_json(s);
                        v["node"] = json!(n.name);
                        v
                    })
                })
                .collect();
            doc(fmt, &Value::Array(rows))
        }
        Output::Table | Output::Name => {
            let rows: Vec<Vec<String>> = status
                .nodes
                .iter()
                .flat_map(|n| n.bgp_sessions.iter().map(|s| bgp_row(&n.name, s)))
                .collect();
            grid(fmt, BGP_HEADERS, &rows)
        }
    }
}

const BGP_HEADERS: &[&str] = &[
    "NODE", "PEER", "HOSTNAME", "AS", "STATE", "PFX-RCVD", "PFX-SENT",
];

fn bgp_row(node: &str, s: &BgpSession) -> Vec<String> {
    let rcvd: u64 = s.prefixes.iter().map(|p| p.received).sum();
    let sent: u64 = s.prefixes.iter().map(|p| p.sent).sum();
    vec![
        cell(node),
        cell(&s.peer),
        cell(&s.hostname),
        s.remote_as.to_string(),
        cell(&s.state),
        rcvd.to_string(),
        sent.to_string(),
    ]
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serde_json::Value always serializes");
    s.push('\n');
    s
}

/// Renders a list: a table, a JSON (YAML) array of objects, or `KIND/NAME` lines.
pub fn list<T: Render>(fmt: impl Into<Fmt>, items: &[T]) -> String {
    let fmt = fmt.into();
    match fmt.out {
        Output::Table => grid(
            fmt,
            T::HEADERS,
            &items.iter().map(T::row).collect::<Vec<_>>(),
        ),
        Output::Json | Output::Yaml => {
            doc(fmt, &Value::Array(items.iter().map(T::to_json).collect()))
        }
        Output::Name => names(T::KIND, items.iter().map(T::name)),
    }
}

/// Renders one object: a one-row table, a JSON (YAML) object, or its `KIND/NAME`.
pub fn show<T: Render>(fmt: impl Into<Fmt>, item: &T) -> String {
    let fmt = fmt.into();
    match fmt.out {
        Output::Json | Output::Yaml => doc(fmt, &item.to_json()),
        Output::Table | Output::Name => list(fmt, std::slice::from_ref(item)),
    }
}

/// Renders fleet status: an intent-revision header line (and the coordinator replicas, when
/// the coordinator reports them) plus the node table, or a JSON object.
pub fn fleet(fmt: impl Into<Fmt>, status: &FleetStatus) -> String {
    let fmt = fmt.into();
    let coordinators = if status.replicas.is_empty() && status.leader.is_empty() {
        String::new()
    } else {
        format!(
            "coordinators: {} (leader: {}; answered by {})\n",
            status.replicas.join(", "),
            if status.leader.is_empty() {
                "none"
            } else {
                &status.leader
            },
            status.served_by
        )
    };
    match fmt.out {
        Output::Table if !fmt.headers => grid(
            fmt,
            NodeStatus::HEADERS,
            &status.nodes.iter().map(NodeStatus::row).collect::<Vec<_>>(),
        ),
        Output::Table => format!(
            "intent revision: {}\n{coordinators}{}",
            status.intent_revision,
            table(
                NodeStatus::HEADERS,
                &status.nodes.iter().map(NodeStatus::row).collect::<Vec<_>>()
            )
        ),
        Output::Name => names(NodeStatus::KIND, status.nodes.iter().map(Render::name)),
        Output::Json | Output::Yaml => doc(
            fmt,
            &json!({
                "intent_revision": status.intent_revision,
                "leader": status.leader,
                "replicas": status.replicas,
                "served_by": status.served_by,
                "nodes": status.nodes.iter().map(NodeStatus::to_json).collect::<Vec<_>>(),
            }),
        ),
    }
}

/// What a write did, for its confirmation line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrote<'a> {
    /// "created", "deleted", "applied", "drained", ...
    pub verb: &'a str,
    /// The object's kind as people read it ("load balancer"); `-o name` uses [`kind_slug`].
    pub kind: &'a str,
    pub name: &'a str,
    pub revision: u64,
    /// The VNI a network create allocated.
    pub vni: Option<u32>,
    /// Validated only, nothing written (`--dry-run`).
    pub dry_run: bool,
}

/// The subcommand name of a kind as write confirmations spell it ("load balancer" -> "lb").
pub fn kind_slug(kind: &str) -> &str {
    match kind {
        "load balancer" => "lb",
        "NAT rule" => "nat",
        "ACL list" => "acl",
        "Direct Connect" => "dc",
        k => k,
    }
}

/// Renders a write confirmation, e.g. `created network web (vni 1000001) at revision 42`,
/// `{"revision":42,"vni":1000001}` or `network/web`; a dry run says so in each format.
pub fn write_result(fmt: impl Into<Fmt>, w: &Wrote) -> String {
    let fmt = fmt.into();
    let vni = w.vni.map(|v| format!(" (vni {v})")).unwrap_or_default();
    match fmt.out {
        Output::Table if w.dry_run => format!(
            "dry run: {} {}{vni} would be {} (validated at revision {}; nothing written)\n",
            w.kind, w.name, w.verb, w.revision
        ),
        Output::Table => format!(
            "{} {} {}{vni} at revision {}\n",
            w.verb, w.kind, w.name, w.revision
        ),
        Output::Name => format!("{}/{}\n", kind_slug(w.kind), w.name),
        Output::Json | Output::Yaml => {
            let mut v = json!({"revision": w.revision});
            if let Some(vni) = w.vni {
                v["vni"] = json!(vni);
            }
            if w.dry_run {
                v["dry_run"] = json!(true);
            }
            match fmt.out {
                Output::Json => format!("{v}\n"),
                _ => doc(fmt, &v),
            }
        }
    }
}

/// "ip:port", an IPv6 address in brackets ("[2001:db8::1]:80") as in a URL.
fn host_port(ip: &str, port: u32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_to_widest_cell() {
        let out = table(
            &["NAME", "CIDR", "VNI"],
            &[
                vec!["web".into(), "10.10.1.0/24".into(), "1000001".into()],
                vec!["database".into(), "10.10.2.0/24".into(), "7".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME      CIDR          VNI\n\
             web       10.10.1.0/24  1000001\n\
             database  10.10.2.0/24  7\n"
        );
    }

    #[test]
    fn table_with_no_rows_prints_header_only() {
        assert_eq!(table(&["A", "BB"], &[]), "A  BB\n");
    }

    #[test]
    fn network_table_and_json() {
        let n = Network {
            ipv6_prefix: String::new(),
            tenant: "blue".into(),
            vpc: "v1".into(),
            name: "web".into(),
            cidr: "10.10.1.0/24".into(),
            vni: 1000001,
            gateway: String::new(),
        };
        assert_eq!(
            list(Output::Table, std::slice::from_ref(&n)),
            "TENANT  VPC  NAME  CIDR          VNI      GATEWAY\n\
             blue    v1   web   10.10.1.0/24  1000001  -\n"
        );
        assert_eq!(
            n.to_json(),
            json!({"tenant":"blue","vpc":"v1","name":"web","cidr":"10.10.1.0/24","vni":1000001,"gateway":""})
        );
        let arr: Value = serde_json::from_str(&list(Output::Json, &[n])).unwrap();
        assert_eq!(arr.as_array().unwrap().len(), 1);
        assert_eq!(arr[0]["vni"], json!(1000001));
    }

    #[test]
    fn node_json_keeps_fabric_ports() {
        let n = Node {
            name: "leaf1".into(),
            role: "switch".into(),
            site: "".into(),
            asn: 65001,
            loopback: "10.0.0.1".into(),
            fabric_ports: vec!["swp1".into(), "swp2".into()],
        };
        assert_eq!(
            n.to_json(),
            json!({"name":"leaf1","role":"switch","site":"","asn":65001,
                   "loopback":"10.0.0.1","fabric_ports":["swp1","swp2"]})
        );
        assert_eq!(
            n.row(),
            vec!["leaf1", "switch", "-", "65001", "10.0.0.1", "swp1,swp2"]
        );
    }

    /// IPv6 fields show in JSON when set, and IPv4-only objects print what they always did.
    #[test]
    fn ipv6_fields_show_in_json_only_when_set() {
        let v = Vpc {
            name: "v1".into(),
            ipv6_ranges: vec!["2001:db8:100::/56".into()],
            ..Default::default()
        };
        assert_eq!(v.to_json()["ipv6_ranges"], json!(["2001:db8:100::/56"]));
        assert!(Vpc::default().to_json().get("ipv6_ranges").is_none());
        let n = Network {
            ipv6_prefix: "2001:db8:100:1::/64".into(),
            ..Default::default()
        };
        assert_eq!(n.to_json()["ipv6_prefix"], json!("2001:db8:100:1::/64"));
        assert!(Network::default().to_json().get("ipv6_prefix").is_none());
        let p = PortBinding {
            ipv6: "2001:db8:100:1::11".into(),
            ..Default::default()
        };
        assert_eq!(p.to_json()["ipv6"], json!("2001:db8:100:1::11"));
        assert!(PortBinding::default().to_json().get("ipv6").is_none());
    }

    #[test]
    fn tenant_vpc_port_json() {
        let t = Tenant {
            name: "blue".into(),
            description: "Blue team".into(),
        };
        assert_eq!(
            t.to_json(),
            json!({"name":"blue","description":"Blue team"})
        );
        let v = Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "blue".into(),
            name: "v1".into(),
            cidr: "10.10.0.0/16".into(),
            site: "dc1".into(),
            id: 7,
            primary_gateway: "gw1".into(),
            standby_gateway: "gw2".into(),
        };
        assert_eq!(
            v.to_json(),
            json!({"tenant":"blue","name":"v1","cidr":"10.10.0.0/16","site":"dc1","id":7,
                   "primary_gateway":"gw1","standby_gateway":"gw2"})
        );
        let p = PortBinding {
            ipv6: String::new(),
            tenant: "blue".into(),
            name: "web-1".into(),
            vpc: "v1".into(),
            network: "web".into(),
            node: "hv1".into(),
            ip: "10.10.1.10".into(),
            mac: "".into(),
            interface: "".into(),
            vlan: 0,
        };
        assert_eq!(
            p.to_json(),
            json!({"tenant":"blue","name":"web-1","vpc":"v1","network":"web","node":"hv1",
                   "interface":"","vlan":0,"ip":"10.10.1.10","mac":""})
        );
        assert_eq!(p.row()[5], "-", "a VM port has no switch interface");
        let bm = PortBinding {
            node: "leaf1".into(),
            interface: "swp5".into(),
            vlan: 100,
            ..p
        };
        assert_eq!(bm.row()[5], "swp5.100");
    }

    fn sample_fleet() -> FleetStatus {
        FleetStatus {
            intent_revision: 42,
            nodes: vec![
                NodeStatus {
                    name: "hv1".into(),
                    role: "hypervisor".into(),
                    lease: "up".into(),
                    applied_revision: 42,
                    desired_revision: 42,
                    in_sync: true,
                    errors: vec![],
                    status_json: r#"{"vnis":[1000001]}"#.into(),
                    ..Default::default()
                },
                NodeStatus {
                    name: "leaf1".into(),
                    role: "switch".into(),
                    lease: "down".into(),
                    applied_revision: 40,
                    desired_revision: 42,
                    in_sync: false,
                    errors: vec!["bgp: peer down".into(), "vrf: missing".into()],
                    status_json: String::new(),
                    ..Default::default()
                },
            ],
            ..FleetStatus::default()
        }
    }

    #[test]
    fn bgp_sessions_show_in_status_and_in_their_own_table() {
        let session = |peer: &str, state: &str| BgpSession {
            peer: peer.into(),
            hostname: peer.into(),
            remote_as: 65101,
            state: state.into(),
            established_epoch: 0,
            prefixes: vec![
                sf_proto::v1::BgpPrefixCounts {
                    family: "ipv4Unicast".into(),
                    received: 10,
                    sent: 11,
                },
                sf_proto::v1::BgpPrefixCounts {
                    family: "l2VpnEvpn".into(),
                    received: 8,
                    sent: 12,
                },
            ],
        };
        let mut fleet = sample_fleet();
        fleet.nodes[0].bgp_sessions =
            vec![session("leaf1", "Established"), session("leaf2", "Idle")];
        fleet.nodes[1].bgp_error = "vtysh timed out".into();
        let fmt = Fmt {
            out: Output::Table,
            headers: false,
        };
        assert_eq!(fleet.nodes[0].row()[6], "1/2");
        assert_eq!(fleet.nodes[1].row()[6], "?");
        assert_eq!(NodeStatus::default().row()[6], "-");
        let table = bgp_sessions(fmt, &fleet);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                ["hv1", "leaf1", "leaf1", "65101", "Established", "18", "23"],
                ["hv1", "leaf2", "leaf2", "65101", "Idle", "18", "23"],
            ]
        );
        let json = fleet.nodes[0].to_json();
        assert_eq!(json["bgp_sessions"][1]["state"], "Idle");
        assert_eq!(json["bgp_sessions"][0]["prefixes"]["l2VpnEvpn"]["sent"], 12);
    }

    #[test]
    fn fleet_table_names_the_coordinators() {
        let status = FleetStatus {
            leader: "coord2".into(),
            replicas: vec!["coord1".into(), "coord2".into()],
            served_by: "coord1".into(),
            ..sample_fleet()
        };
        let out = fleet(Output::Table, &status);
        assert!(
            out.starts_with(
                "intent revision: 42\ncoordinators: coord1, coord2 (leader: coord2; answered by coord1)\nNODE"
            ),
            "{out}"
        );
    }

    #[test]
    fn fleet_table() {
        assert_eq!(
            fleet(Output::Table, &sample_fleet()),
            "intent revision: 42\n\
             NODE   ROLE        LEASE  APPLIED  DESIRED  SYNC  BGP  ERRORS\n\
             hv1    hypervisor  up     42       42       yes   -    -\n\
             leaf1  switch      down   40       42       no    -    bgp: peer down; vrf: missing\n"
        );
    }

    #[test]
    fn fleet_json_parses_status_document() {
        let v: Value = serde_json::from_str(&fleet(Output::Json, &sample_fleet())).unwrap();
        assert_eq!(
            v,
            json!({
                "intent_revision": 42,
                "leader": "", "replicas": [], "served_by": "",
                "nodes": [
                    {"name":"hv1","role":"hypervisor","lease":"up","applied_revision":42,
                     "desired_revision":42,"in_sync":true,"errors":[],
                     "bgp_sessions":[],"bgp_error":"",
                     "status":{"vnis":[1000001]}},
                    {"name":"leaf1","role":"switch","lease":"down","applied_revision":40,
                     "desired_revision":42,"in_sync":false,
                     "errors":["bgp: peer down","vrf: missing"],"bgp_sessions":[],"bgp_error":"","status":null}
                ]
            })
        );
    }

    fn wrote<'a>(verb: &'a str, kind: &'a str, name: &'a str, rev: u64) -> Wrote<'a> {
        Wrote {
            verb,
            kind,
            name,
            revision: rev,
            vni: None,
            dry_run: false,
        }
    }

    #[test]
    fn write_results() {
        let net = Wrote {
            vni: Some(1000001),
            ..wrote("created", "network", "web", 42)
        };
        assert_eq!(
            write_result(Output::Table, &net),
            "created network web (vni 1000001) at revision 42\n"
        );
        let del = wrote("deleted", "vpc", "blue", 43);
        assert_eq!(
            write_result(Output::Table, &del),
            "deleted vpc blue at revision 43\n"
        );
        assert_eq!(
            write_result(Output::Json, &net),
            "{\"revision\":42,\"vni\":1000001}\n"
        );
        assert_eq!(write_result(Output::Json, &del), "{\"revision\":43}\n");
        assert_eq!(write_result(Output::Yaml, &del), "revision: 43\n");
        let lb = wrote("created", "load balancer", "web-lb", 44);
        assert_eq!(write_result(Output::Name, &lb), "lb/web-lb\n");
    }

    #[test]
    fn a_dry_run_says_nothing_was_written() {
        let w = Wrote {
            dry_run: true,
            ..wrote("created", "tenant", "demo", 7)
        };
        assert_eq!(
            write_result(Output::Table, &w),
            "dry run: tenant demo would be created (validated at revision 7; nothing written)\n"
        );
        let v: Value = serde_json::from_str(&write_result(Output::Json, &w)).unwrap();
        assert_eq!(v, json!({"revision": 7, "dry_run": true}));
    }

    #[test]
    fn yaml_name_and_headerless_lists() {
        let items = vec![
            Tenant {
                name: "demo".into(),
                description: "the demo".into(),
            },
            Tenant {
                name: "other".into(),
                description: String::new(),
            },
        ];
        assert_eq!(list(Output::Name, &items), "tenant/demo\ntenant/other\n");
        let yaml = list(Output::Yaml, &items);
        assert_eq!(
            yaml,
            // serde_json keeps keys sorted, in JSON and YAML alike.
            "- description: the demo\n  name: demo\n- description: ''\n  name: other\n"
        );
        let headless = Fmt {
            out: Output::Table,
            headers: false,
        };
        assert_eq!(list(headless, &items), "demo   the demo\nother  -\n");
        assert_eq!(
            list(Output::Table, &items).lines().next(),
            Some("NAME   DESCRIPTION")
        );
        assert_eq!(
            show(Output::Yaml, &items[0]),
            "description: the demo\nname: demo\n"
        );
        assert_eq!(show(Output::Name, &items[1]), "tenant/other\n");
    }
}
