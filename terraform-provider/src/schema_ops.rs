//! Schemas of the resources a fabric team operates beside the tenants' objects: load
//! balancers, Direct Connects, inventory nodes and gateway drains.
//!
//! Load balancers, Direct Connects and nodes have Create and Delete calls only, so every
//! configurable attribute forces replacement. A gateway's drain has Drain/Undrain calls: it is
//! its own resource (`stackfabric_gateway_drain`, present = drained) rather than a `drained`
//! attribute of `stackfabric_node`, because the gateways that get drained are the ones the lab
//! (or an installer) enrolled, which a team should not have to import as nodes, and because a
//! `drained` flag would be the only in-place attribute of an otherwise replace-only resource,
//! where replacing the node to change anything else would silently undrain it.
use crate::schema::{dflt, opt, out, req, str_list, Attr, Block, Def, Ty};

fn id() -> Attr {
    out(
        "id",
        Ty::Str,
        "The object's key joined by '/' (the import ID).",
    )
}

fn vpc_key(what: &'static str) -> Vec<Attr> {
    vec![
        id(),
        req("tenant", Ty::Str, "Tenant that owns the object."),
        req("vpc", Ty::Str, "VPC of the object."),
        req("name", Ty::Str, what),
    ]
}

fn load_balancer() -> Def {
    let attrs = [
        vpc_key("Load balancer name, unique per VPC."),
        vec![
            req("vip", Ty::Str, "Virtual IP: an address of a public pool of the VPC's site, or a VPC-internal address outside every tier."),
            opt("protocol", Ty::Str, "\"tcp\" (default) or \"udp\"."),
            req("port", Ty::Num, "Port of the VIP (1-65535)."),
            opt("health_type", Ty::Str, "Health check: \"none\" (default), \"tcp\" or \"http\"."),
            opt("health_path", Ty::Str, "Path of the HTTP check (default \"/\")."),
            opt("health_expect_status", Ty::Num, "HTTP status the check expects (default 200)."),
            opt("interval_ms", Ty::Num, "Check interval in ms (default 2000)."),
            opt("timeout_ms", Ty::Num, "Check timeout in ms (default 1000)."),
            opt("rise", Ty::Num, "Passed checks that bring a backend up (default 2)."),
            opt("fall", Ty::Num, "Failed checks that take a backend down (default 3)."),
            opt("table_size", Ty::Num, "Maglev table size, a prime > 100 x backends (default 65537)."),
            opt("source_cidrs", str_list(), "Sources allowed to reach vip:port (IPv4 CIDRs); empty = everyone."),
            out("gateway", Ty::Str, "Gateway serving the VIP."),
            out("table_digest", Ty::Str, "Digest of the Maglev table the gateway installed."),
            out("backend_health", Ty::Map(Box::new(Ty::Str)), "Health of each backend by \"ip:port\": \"up\", \"down\" or \"unknown\"."),
        ],
    ]
    .concat();
    Def {
        type_name: "stackfabric_load_balancer",
        desc: "A Maglev load balancer of a VPC on the gateway serving it: a VIP and port spread over backends in the VPC's tiers, with an optional health check.",
        attrs,
        blocks: vec![Block {
            name: "backend",
            desc: "One backend (at least one).",
            force_new: true,
            attrs: vec![
                req("ip", Ty::Str, "Host address in a tier of the VPC."),
                req("port", Ty::Num, "Backend port (1-65535)."),
                dflt("weight", Ty::Num, 1, "Relative weight 1-1000 (default 1)."),
            ],
        }],
        key: &["tenant", "vpc", "name"],
        aliases: &[("health.type", "health_type"), ("health.expect_status", "health_expect_status"), ("health.path", "health_path")],
    }
}

fn direct_connect() -> Def {
    let attrs = [
        vpc_key("Direct Connect name, unique per VPC."),
        vec![
            req("switch", Ty::Str, "Switch with the customer hand-off port."),
            req("interface", Ty::Str, "Server-facing interface of the switch."),
            opt("vlan", Ty::Num, "802.1Q VLAN on interface (0 = untagged)."),
            req("local_address", Ty::Str, "The VPC router's address with prefix on the hand-off segment, e.g. 169.254.100.1/30."),
            req("peer_address", Ty::Str, "The customer router's address on that segment."),
            opt("local_asn", Ty::Num, "AS number of the VPC side (default 64512)."),
            req("customer_asn", Ty::Num, "AS number of the customer."),
            req("accept", str_list(), "Accepted customer prefixes: \"192.168.0.0/16\", \"192.168.0.0/16 le 24\", \"10.0.0.0/8 ge 16 le 24\"."),
            out("vni", Ty::Num, "Hand-off VNI."),
            out("gateway", Ty::Str, "Gateway terminating the BGP session."),
            out("bgp_state", Ty::Str, "State of the BGP session."),
            out("prefixes_received", Ty::Num, "Prefixes received from the customer."),
            out("prefixes_accepted", Ty::Num, "Prefixes accepted by the accept list."),
            out("prefixes_sent", Ty::Num, "Prefixes sent to the customer."),
        ],
    ]
    .concat();
    Def {
        type_name: "stackfabric_direct_connect",
        desc: "A Direct Connect: a customer router on a switch port peering by BGP with a VPC.",
        attrs,
        blocks: vec![],
        key: &["tenant", "vpc", "name"],
        aliases: &[],
    }
}

fn node() -> Def {
    Def {
        type_name: "stackfabric_node",
        desc: "An inventory node: a switch, gateway or hypervisor the fabric configures once its agent connects with a certificate of that name.",
        attrs: vec![
            id(),
            req("name", Ty::Str, "Node name (its certificate's name)."),
            req("role", Ty::Str, "\"switch\", \"gateway\" or \"hypervisor\"."),
            opt("site", Ty::Str, "Site of the node."),
            req("asn", Ty::Num, "BGP AS number of the node."),
            req("loopback", Ty::Str, "Loopback address: BGP router-id and, on hypervisors and gateways, the VTEP."),
            opt("fabric_ports", str_list(), "Interfaces facing the fabric (BGP unnumbered on each)."),
        ],
        blocks: vec![],
        key: &["name"],
        aliases: &[],
    }
}

fn gateway_drain() -> Def {
    Def {
        type_name: "stackfabric_gateway_drain",
        desc: "A gateway kept out of placement: creating it drains the gateway (its VPCs move to others), destroying it undrains it.",
        attrs: vec![
            id(),
            req("gateway", Ty::Str, "Name of a gateway node."),
        ],
        blocks: vec![],
        key: &["gateway"],
        aliases: &[("name", "gateway")],
    }
}

pub fn resources() -> Vec<Def> {
    vec![load_balancer(), direct_connect(), node(), gateway_drain()]
}
