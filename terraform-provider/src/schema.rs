//! Resource and data source schemas, and how they become Terraform's `Schema` messages.
//!
//! The FabricApi has no Update calls except `ApplyAclList` (create-or-replace) and the drain
//! switch (`DrainGateway`/`UndrainGateway`), so every configurable attribute of the other
//! resources is `force_new` (RequiresReplace); the ACL list is updated in place, and a gateway's
//! drain state is a resource of its own whose existence is the drain.
use crate::tf;

#[derive(Debug, Clone)]
pub enum Ty {
    Str,
    Num,
    Bool,
    List(Box<Ty>),
    /// A map with string keys.
    Map(Box<Ty>),
    Obj(Vec<(&'static str, Ty)>),
}

impl Ty {
    pub fn json(&self) -> serde_json::Value {
        match self {
            Ty::Str => "string".into(),
            Ty::Num => "number".into(),
            Ty::Bool => "bool".into(),
            Ty::List(t) => serde_json::json!(["list", t.json()]),
            Ty::Map(t) => serde_json::json!(["map", t.json()]),
            Ty::Obj(fields) => {
                let m: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.json()))
                    .collect();
                serde_json::json!(["object", m])
            }
        }
    }
}

pub fn str_list() -> Ty {
    Ty::List(Box::new(Ty::Str))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Required,
    /// Optional; the coordinator's value is kept when the configuration leaves it out.
    Optional,
    /// Set by the coordinator only.
    Computed,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Ty,
    pub mode: Mode,
    /// A change replaces the object (no update call for it).
    pub force_new: bool,
    pub sensitive: bool,
    pub desc: &'static str,
    /// The coordinator's value when the attribute is left out, filled in by the plan (nested
    /// block attributes; top-level optional ones are simply computed).
    pub default: Option<i64>,
}

/// A nested `block_name { ... }` list block (ACL rules, load-balancer backends).
#[derive(Debug, Clone)]
pub struct Block {
    pub name: &'static str,
    pub attrs: Vec<Attr>,
    pub desc: &'static str,
    pub force_new: bool,
}

#[derive(Debug, Clone)]
pub struct Def {
    pub type_name: &'static str,
    pub desc: &'static str,
    pub attrs: Vec<Attr>,
    pub blocks: Vec<Block>,
    /// Attributes that identify the object, joined by '/' into `id` and the import ID.
    pub key: &'static [&'static str],
    /// Server field names (after the object prefix, e.g. "name" of "node.name") that name a
    /// differently called attribute here.
    pub aliases: &'static [(&'static str, &'static str)],
}

impl Def {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }
    pub fn import_format(&self) -> String {
        self.key.join("/")
    }
}

pub fn req(name: &'static str, ty: Ty, desc: &'static str) -> Attr {
    Attr {
        name,
        ty,
        mode: Mode::Required,
        force_new: true,
        sensitive: false,
        desc,
        default: None,
    }
}
pub fn opt(name: &'static str, ty: Ty, desc: &'static str) -> Attr {
    Attr {
        mode: Mode::Optional,
        ..req(name, ty, desc)
    }
}
pub fn out(name: &'static str, ty: Ty, desc: &'static str) -> Attr {
    Attr {
        mode: Mode::Computed,
        force_new: false,
        ..req(name, ty, desc)
    }
}
/// An optional attribute of a nested block whose left-out value is the API's `d`.
pub fn dflt(name: &'static str, ty: Ty, d: i64, desc: &'static str) -> Attr {
    Attr {
        default: Some(d),
        ..opt(name, ty, desc)
    }
}
/// Marks an attribute as updatable in place.
pub fn inplace(mut a: Attr) -> Attr {
    a.force_new = false;
    a
}

/// `plain_optional`: optional attributes are not also computed (provider configuration, and
/// nested blocks, whose left-out values the provider maps to the API's "any"/0 itself).
fn to_tf_attr(a: &Attr, plain_optional: bool) -> tf::schema::Attribute {
    let mut desc = a.desc.to_string();
    if a.force_new && a.mode != Mode::Computed {
        desc.push_str(" Changing it replaces the object.");
    }
    tf::schema::Attribute {
        name: a.name.to_string(),
        r#type: serde_json::to_vec(&a.ty.json()).unwrap_or_default(),
        description: desc,
        required: a.mode == Mode::Required,
        optional: a.mode == Mode::Optional,
        computed: a.mode == Mode::Computed
            || (a.mode == Mode::Optional && (!plain_optional || a.default.is_some())),
        sensitive: a.sensitive,
        ..Default::default()
    }
}

pub fn to_tf_block(
    attrs: &[Attr],
    blocks: &[Block],
    desc: &str,
    plain_optional: bool,
) -> tf::schema::Block {
    tf::schema::Block {
        version: 0,
        attributes: attrs
            .iter()
            .map(|a| to_tf_attr(a, plain_optional))
            .collect(),
        block_types: blocks
            .iter()
            .map(|b| tf::schema::NestedBlock {
                type_name: b.name.to_string(),
                block: Some(to_tf_block(&b.attrs, &[], b.desc, true)),
                nesting: tf::schema::nested_block::NestingMode::List as i32,
                min_items: 0,
                max_items: 0,
            })
            .collect(),
        description: desc.to_string(),
        ..Default::default()
    }
}

pub fn to_tf_schema(d: &Def, plain_optional: bool) -> tf::Schema {
    tf::Schema {
        version: 0,
        block: Some(to_tf_block(&d.attrs, &d.blocks, d.desc, plain_optional)),
    }
}

fn key_attrs(key: &[&'static str], last_desc: &'static str) -> Vec<Attr> {
    key.iter()
        .map(|k| match *k {
            "tenant" => req("tenant", Ty::Str, "Tenant that owns the object."),
            "vpc" => req("vpc", Ty::Str, "VPC of the object."),
            _ => req(k, Ty::Str, last_desc),
        })
        .collect()
}

fn with_id(mut attrs: Vec<Attr>, key: &'static [&'static str]) -> Vec<Attr> {
    let _ = key;
    attrs.insert(
        0,
        out(
            "id",
            Ty::Str,
            "The object's key joined by '/' (the import ID).",
        ),
    );
    attrs
}

pub fn resources() -> Vec<Def> {
    let mut v = Vec::new();
    let k: &[&str] = &["name"];
    v.push(Def {
        type_name: "stackfabric_tenant",
        desc: "A tenant of the fabric.",
        attrs: with_id(
            [
                key_attrs(k, "Tenant name."),
                vec![opt("description", Ty::Str, "Free text.")],
            ]
            .concat(),
            k,
        ),
        blocks: vec![],
        key: k,
        aliases: &[],
    });
    let k: &[&str] = &["tenant", "name"];
    v.push(Def {
        type_name: "stackfabric_vpc",
        desc: "A VPC (VRF) of a tenant; the coordinator places it on a primary and a standby gateway.",
        attrs: with_id(
            [
                key_attrs(k, "VPC name."),
                vec![
                    req("cidr", Ty::Str, "IPv4 CIDR the VPC's networks must fall into."),
                    opt("site", Ty::Str, "Site the VPC lives in."),
                    out("vpc_id", Ty::Num, "Numeric VPC id allocated by the coordinator."),
                    out("primary_gateway", Ty::Str, "Gateway serving the VPC."),
                    out("standby_gateway", Ty::Str, "Standby gateway of the VPC."),
                ],
            ]
            .concat(),
            k,
        ),
        blocks: vec![],
        key: k,
        aliases: &[],
    });
    let k: &[&str] = &["tenant", "vpc", "name"];
    v.push(Def {
        type_name: "stackfabric_network",
        desc: "A network (tier) of a VPC: one VXLAN VNI.",
        attrs: with_id(
            [
                key_attrs(k, "Network name."),
                vec![
                    req("cidr", Ty::Str, "Tier subnet inside the VPC CIDR."),
                    opt(
                        "vni",
                        Ty::Num,
                        "VXLAN network identifier; allocated from the pool when left out.",
                    ),
                    opt(
                        "gateway",
                        Ty::Str,
                        "Gateway address inside cidr; the first host address when left out.",
                    ),
                ],
            ]
            .concat(),
            k,
        ),
        blocks: vec![],
        key: k,
        aliases: &[],
    });
    v.push(Def {
        type_name: "stackfabric_nat_rule",
        desc: "A NAT rule of a VPC: kind \"snat\" (public_ip), \"port-forward\" (all fields) or \"static-nat\" (public_ip, private_ip).",
        attrs: with_id(
            [
                key_attrs(k, "Rule name."),
                vec![
                    req("kind", Ty::Str, "\"snat\", \"port-forward\" or \"static-nat\"."),
                    req("public_ip", Ty::Str, "Address from a public pool."),
                    opt("protocol", Ty::Str, "\"tcp\" or \"udp\" (port-forward only)."),
                    opt("public_port", Ty::Num, "Public port (port-forward only)."),
                    opt("private_ip", Ty::Str, "VPC address (port-forward, static-nat)."),
                    opt("private_port", Ty::Num, "Private port (port-forward only)."),
                ],
            ]
            .concat(),
            k,
        ),
        blocks: vec![],
        key: k,
        aliases: &[],
    });
    v.push(Def {
        type_name: "stackfabric_static_route",
        desc: "A static route inside a VPC.",
        attrs: with_id(
            [
                key_attrs(k, "Route name."),
                vec![
                    req("prefix", Ty::Str, "Destination IPv4 prefix."),
                    req(
                        "nexthop",
                        Ty::Str,
                        "Next-hop address inside one of the VPC's networks.",
                    ),
                ],
            ]
            .concat(),
            k,
        ),
        blocks: vec![],
        key: k,
        aliases: &[],
    });
    let k: &[&str] = &["name"];
    v.push(Def {
        type_name: "stackfabric_public_pool",
        desc: "A pool of public IPv4 addresses of a site (NAT and load-balancer addresses come from it).",
        attrs: with_id(
            [
                key_attrs(k, "Pool name."),
                vec![
                    req("cidr", Ty::Str, "IPv4 CIDR of the pool."),
                    opt("site", Ty::Str, "Site of the pool."),
                ],
            ]
            .concat(),
            k,
        ),
        blocks: vec![],
        key: k,
        aliases: &[],
    });
    let k: &[&str] = &["tenant", "name"];
    v.push(Def {
        type_name: "stackfabric_port_binding",
        desc: "A port (VM NIC on a hypervisor, or a bare-metal switch port) in a network.",
        attrs: with_id(
            [
                key_attrs(k, "Port name, unique per tenant."),
                vec![
                    req("vpc", Ty::Str, "VPC of the network."),
                    req("network", Ty::Str, "Network the port is in."),
                    req("node", Ty::Str, "Hypervisor or switch hosting the port."),
                    req("ip", Ty::Str, "IPv4 address inside the network's cidr."),
                    opt("mac", Ty::Str, "MAC address aa:bb:cc:dd:ee:ff."),
                    opt(
                        "interface",
                        Ty::Str,
                        "Bare metal: the switch's server-facing interface.",
                    ),
                    opt(
                        "vlan",
                        Ty::Num,
                        "Bare metal: 802.1Q VLAN on interface (0 = untagged).",
                    ),
                ],
            ]
            .concat(),
            k,
        ),
        blocks: vec![],
        key: k,
        aliases: &[],
    });
    let k: &[&str] = &["tenant", "vpc", "name"];
    v.push(Def {
        type_name: "stackfabric_acl_list",
        desc: "A network ACL list of a VPC (lowest rule number first, first match wins), attached to tiers. Updated in place (ApplyAclList).",
        attrs: with_id(
            [
                key_attrs(k, "ACL list name."),
                vec![
                    inplace(req("default_action", Ty::Str, "\"allow\" or \"deny\" when no rule matches.")),
                    inplace(opt("tiers", str_list(), "Networks of the VPC the list is attached to.")),
                ],
            ]
            .concat(),
            k,
        ),
        blocks: vec![Block {
            name: "rule",
            desc: "One rule.",
            force_new: false,
            attrs: vec![
                inplace(req("number", Ty::Num, "Rule number (lowest first).")),
                inplace(req("direction", Ty::Str, "\"ingress\" or \"egress\".")),
                inplace(req("action", Ty::Str, "\"allow\" or \"deny\".")),
                inplace(req("protocol", Ty::Str, "\"all\", \"tcp\", \"udp\" or \"icmp\".")),
                inplace(opt("port_start", Ty::Num, "First port (tcp/udp; 0 = any).")),
                inplace(opt("port_end", Ty::Num, "Last port (tcp/udp; 0 = any).")),
                inplace(opt("icmp_type", Ty::Num, "ICMP type (-1 = any).")),
                inplace(opt("icmp_code", Ty::Num, "ICMP code (-1 = any).")),
                inplace(req("cidrs", str_list(), "Sources (ingress) or destinations (egress).")),
            ],
        }],
        key: k,
        aliases: &[],
    });
    v.extend(crate::schema_ops::resources());
    v
}

pub fn data_sources() -> Vec<Def> {
    let node = Ty::Obj(vec![
        ("name", Ty::Str),
        ("role", Ty::Str),
        ("lease", Ty::Str),
        ("applied_revision", Ty::Num),
        ("desired_revision", Ty::Num),
        ("in_sync", Ty::Bool),
        ("errors", str_list()),
    ]);
    let placement = Ty::Obj(vec![
        ("tenant", Ty::Str),
        ("vpc", Ty::Str),
        ("vpc_id", Ty::Num),
        ("primary", Ty::Str),
        ("standby", Ty::Str),
    ]);
    vec![
        Def {
            type_name: "stackfabric_fleet_status",
            desc: "Sync status of every node and the coordinator replicas (GetFleetStatus).",
            attrs: vec![
                out("intent_revision", Ty::Num, "Current intent revision."),
                out("leader", Ty::Str, "Elected coordinator leader."),
                out("replicas", str_list(), "Live coordinator replicas."),
                out("nodes", Ty::List(Box::new(node)), "Per-node status."),
                out(
                    "all_in_sync",
                    Ty::Bool,
                    "Every node has applied the current intent.",
                ),
            ],
            blocks: vec![],
            key: &[],
            aliases: &[],
        },
        Def {
            type_name: "stackfabric_gateway_placement",
            desc: "Gateway placement of every VPC (ListPlacements), optionally of one tenant.",
            attrs: vec![
                Attr {
                    force_new: false,
                    ..opt("tenant", Ty::Str, "Only this tenant's VPCs.")
                },
                out(
                    "placements",
                    Ty::List(Box::new(placement)),
                    "One entry per VPC.",
                ),
                out("drained", str_list(), "Gateways currently drained."),
            ],
            blocks: vec![],
            key: &[],
            aliases: &[],
        },
    ]
}

pub fn provider() -> Def {
    let o = |n, t, d| Attr {
        force_new: false,
        ..opt(n, t, d)
    };
    Def {
        type_name: "stackfabric",
        desc: "Connection to the StackFabric coordinator, as sfctl's flags; each falls back to the SF_* variable sfctl reads.",
        attrs: vec![
            o("endpoint", Ty::Str, "FabricApi endpoint, http:// or https:// (SF_ENDPOINT; default https://127.0.0.1:7443)."),
            o("ca", Ty::Str, "PEM file of the CA that signed the coordinator's certificate (SF_CA; required for https)."),
            o("server_name", Ty::Str, "TLS server name to verify (SF_SERVER_NAME; default coordinator)."),
            Attr { sensitive: true, ..o("token", Ty::Str, "Bearer token (SF_TOKEN); wins over token_file.") },
            o("token_file", Ty::Str, "File holding the bearer token (SF_TOKEN_FILE)."),
            o("timeout", Ty::Num, "Connect and per-request timeout in seconds (default 10)."),
        ],
        blocks: vec![],
        key: &[],
        aliases: &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every resource has a registry page naming each attribute and its import ID format.
    #[test]
    fn every_resource_has_a_doc_page_with_its_attributes_and_import_id() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/resources");
        for d in resources() {
            let short = d.type_name.trim_start_matches("stackfabric_");
            let page = std::fs::read_to_string(dir.join(format!("{short}.md")))
                .unwrap_or_else(|e| panic!("{}: no doc page: {e}", d.type_name));
            let names = d.attrs.iter().map(|a| a.name).chain(
                d.blocks
                    .iter()
                    .flat_map(|b| std::iter::once(b.name).chain(b.attrs.iter().map(|a| a.name))),
            );
            for n in names {
                assert!(
                    page.contains(&format!("`{n}`")),
                    "{}: `{n}` undocumented",
                    d.type_name
                );
            }
            let id = d.key.iter().map(|k| k.to_uppercase()).collect::<Vec<_>>();
            let import = format!("terraform import {}.example {}", d.type_name, id.join("/"));
            assert!(page.contains(&import), "{}: no `{import}`", d.type_name);
        }
    }

    #[test]
    fn operations_resources_are_replace_only_with_a_key_per_id() {
        for d in crate::schema_ops::resources() {
            for a in d.attrs.iter().filter(|a| a.mode != Mode::Computed) {
                assert!(a.force_new, "{}.{} has no update call", d.type_name, a.name);
            }
            for k in d.key {
                assert_eq!(d.attr(k).map(|a| a.mode), Some(Mode::Required), "{k}");
            }
        }
    }
}
