//! The FabricApi side: connecting like sfctl does, and mapping each resource's attribute
//! object to and from the coordinator's messages. Reads use Get where the API has one, else
//! List + filter; the only update call is ApplyAclList. The operations-side resources (load
//! balancers, Direct Connects, nodes, gateway drains) are mapped in `ops`.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use sf_proto::v1 as pb;
use sf_proto::v1::fabric_api_client::FabricApiClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Status};

use crate::msgpack::Value;

pub type Obj = BTreeMap<String, Value>;
pub type Client = FabricApiClient<InterceptedService<Channel, Auth>>;

#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Connection settings: the provider block's value, else the SF_* variable, else sfctl's default.
pub struct Settings {
    pub endpoint: String,
    pub ca: Option<String>,
    pub server_name: String,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub timeout: u64,
}

impl Settings {
    pub fn from_config(cfg: &Obj) -> Settings {
        let pick = |k: &str, env: &str| -> Option<String> {
            match cfg.get(k).and_then(|v| v.as_str()) {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => std::env::var(env).ok().filter(|s| !s.is_empty()),
            }
        };
        Settings {
            endpoint: pick("endpoint", "SF_ENDPOINT")
                .unwrap_or_else(|| "https://127.0.0.1:7443".into()),
            ca: pick("ca", "SF_CA"),
            server_name: pick("server_name", "SF_SERVER_NAME")
                .unwrap_or_else(|| "coordinator".into()),
            token: pick("token", "SF_TOKEN"),
            token_file: pick("token_file", "SF_TOKEN_FILE"),
            timeout: cfg.get("timeout").and_then(|v| v.as_u64()).unwrap_or(10),
        }
    }
}

fn load_token(s: &Settings) -> anyhow::Result<Option<String>> {
    if let Some(t) = &s.token {
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(path) = &s.token_file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {path}"))?;
        let t = raw.trim();
        if t.is_empty() {
            bail!("token file {path} is empty");
        }
        return Ok(Some(t.to_string()));
    }
    Ok(None)
}

pub async fn connect(s: &Settings) -> anyhow::Result<Client> {
    let header = match load_token(s)? {
        None => None,
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| anyhow!("token contains characters not allowed in a header"))?,
        ),
    };
    let timeout = Duration::from_secs(s.timeout.max(1));
    let mut endpoint = Channel::from_shared(s.endpoint.clone())
        .with_context(|| format!("invalid endpoint {:?}", s.endpoint))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if s.endpoint.starts_with("https://") {
        let ca = s.ca.as_ref().ok_or_else(|| {
            anyhow!(
                "endpoint {} uses https: set ca (or SF_CA) to the coordinator's CA certificate",
                s.endpoint
            )
        })?;
        let pem = std::fs::read(ca).with_context(|| format!("cannot read CA file {ca}"))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .domain_name(s.server_name.clone());
        endpoint = endpoint
            .tls_config(tls)
            .context("invalid TLS configuration")?;
    }
    let unreachable = || format!("cannot reach coordinator at {}", s.endpoint);
    let channel = tokio::time::timeout(timeout, endpoint.connect())
        .await
        .map_err(|_| anyhow!("timed out after {}s", timeout.as_secs()))
        .with_context(unreachable)?
        .with_context(unreachable)?;
    Ok(FabricApiClient::with_interceptor(channel, Auth(header)))
}

// ---------------------------------------------------------------- attribute helpers

fn s(o: &Obj, k: &str) -> String {
    o.get(k)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}
fn n(o: &Obj, k: &str) -> u32 {
    o.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as u32
}
fn sl(o: &Obj, k: &str) -> Vec<String> {
    match o.get(k) {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}
fn vs(x: &str) -> Value {
    Value::Str(x.to_string())
}
fn vn(x: impl Into<i64>) -> Value {
    Value::Int(x.into())
}
fn vl(x: &[String]) -> Value {
    Value::List(x.iter().map(|s| vs(s)).collect())
}

macro_rules! obj {
    ($($k:expr => $v:expr),* $(,)?) => {{
        let mut m = Obj::new();
        $( m.insert($k.to_string(), $v); )*
        m
    }};
}

mod ops;

/// The resource's flat NAT attributes (`kind` = snat | port-forward | static-nat) as the
/// API's oneof; an unknown kind is sent as none, which the server refuses on `nat.kind`.
fn nat_kind(o: &Obj) -> Option<pb::nat_rule::Kind> {
    use pb::nat_rule::Kind;
    Some(match s(o, "kind").as_str() {
        "snat" => Kind::Snat(pb::Snat {
            public_ip: s(o, "public_ip"),
        }),
        "port-forward" => Kind::PortForward(pb::PortForward {
            public_ip: s(o, "public_ip"),
            protocol: s(o, "protocol"),
            public_port: n(o, "public_port"),
            private_ip: s(o, "private_ip"),
            private_port: n(o, "private_port"),
        }),
        "static-nat" => Kind::StaticNat(pb::StaticNat {
            public_ip: s(o, "public_ip"),
            private_ip: s(o, "private_ip"),
        }),
        _ => return None,
    })
}

/// The flat attributes of a NAT rule's kind (empty or 0 where the kind has none).
fn nat_attrs(kind: Option<&pb::nat_rule::Kind>) -> Obj {
    use pb::nat_rule::Kind;
    let (name, public_ip, protocol, public_port, private_ip, private_port) = match kind {
        Some(Kind::Snat(x)) => ("snat", x.public_ip.as_str(), "", 0, "", 0),
        Some(Kind::PortForward(x)) => (
            "port-forward",
            x.public_ip.as_str(),
            x.protocol.as_str(),
            x.public_port,
            x.private_ip.as_str(),
            x.private_port,
        ),
        Some(Kind::StaticNat(x)) => (
            "static-nat",
            x.public_ip.as_str(),
            "",
            0,
            x.private_ip.as_str(),
            0,
        ),
        None => ("", "", "", 0, "", 0),
    };
    obj! {
        "kind" => vs(name), "public_ip" => vs(public_ip), "protocol" => vs(protocol),
        "public_port" => vn(public_port), "private_ip" => vs(private_ip),
        "private_port" => vn(private_port),
    }
}

fn oref(t: &str, v: &str, name: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        tenant: t.into(),
        vpc: v.into(),
        name: name.into(),
    }
}
fn lreq(t: &str, v: &str) -> pb::ListRequest {
    pb::ListRequest {
        tenant: t.into(),
        vpc: v.into(),
    }
}

/// Get calls answer NotFound for a missing object: that is "gone", not an error.
fn found<T>(r: Result<tonic::Response<T>, Status>) -> Result<Option<T>, Status> {
    match r {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(e) if e.code() == Code::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- per-resource mapping

fn acl_rule_in(r: &Value) -> pb::AclRule {
    let empty = Obj::new();
    let o = match r {
        Value::Map(m) => m,
        _ => &empty,
    };
    let icmp = |k: &str| {
        o.get(k)
            .and_then(|v| v.as_i64())
            .map(|i| i as i32)
            .unwrap_or(-1)
    };
    pb::AclRule {
        number: n(o, "number"),
        direction: s(o, "direction"),
        action: s(o, "action"),
        protocol: s(o, "protocol"),
        port_start: n(o, "port_start"),
        port_end: n(o, "port_end"),
        icmp_type: icmp("icmp_type"),
        icmp_code: icmp("icmp_code"),
        cidrs: sl(o, "cidrs"),
    }
}

/// Left-out optional rule fields are the API's "any" (0 ports, -1 ICMP); they read back null.
fn acl_rule_out(r: &pb::AclRule) -> Value {
    let port = |p: u32| if p == 0 { Value::Null } else { vn(p) };
    let icmp = |i: i32| if i < 0 { Value::Null } else { vn(i) };
    Value::Map(obj! {
        "number" => vn(r.number),
        "direction" => vs(&r.direction),
        "action" => vs(&r.action),
        "protocol" => vs(&r.protocol),
        "port_start" => port(r.port_start),
        "port_end" => port(r.port_end),
        "icmp_type" => icmp(r.icmp_type),
        "icmp_code" => icmp(r.icmp_code),
        "cidrs" => vl(&r.cidrs),
    })
}

fn acl_in(o: &Obj) -> pb::AclList {
    pb::AclList {
        tenant: s(o, "tenant"),
        vpc: s(o, "vpc"),
        name: s(o, "name"),
        default_action: s(o, "default_action"),
        tiers: sl(o, "tiers"),
        rules: match o.get("rule") {
            Some(Value::List(rs)) => rs.iter().map(acl_rule_in).collect(),
            _ => vec![],
        },
    }
}

/// Reads the object named by the key attributes of `o`; None when it does not exist.
pub async fn read(c: &mut Client, ty: &str, o: &Obj) -> Result<Option<Obj>, Status> {
    let (t, v, name) = (s(o, "tenant"), s(o, "vpc"), s(o, "name"));
    Ok(match ty {
        "stackfabric_tenant" => c
            .list_tenants(pb::Empty {})
            .await?
            .into_inner()
            .items
            .into_iter()
            .find(|x| x.name == name)
            .map(|x| obj! {"name" => vs(&x.name), "description" => vs(&x.description)}),
        "stackfabric_vpc" => found(c.get_vpc(oref(&t, "", &name)).await)?.map(|x| {
            obj! {
                "tenant" => vs(&x.tenant), "name" => vs(&x.name), "cidr" => vs(&x.cidr),
                "site" => vs(&x.site), "vpc_id" => vn(x.id),
                "primary_gateway" => vs(&x.primary_gateway),
                "standby_gateway" => vs(&x.standby_gateway),
            }
        }),
        "stackfabric_network" => found(c.get_network(oref(&t, &v, &name)).await)?.map(|x| {
            obj! {
                "tenant" => vs(&x.tenant), "vpc" => vs(&x.vpc), "name" => vs(&x.name),
                "cidr" => vs(&x.cidr), "vni" => vn(x.vni), "gateway" => vs(&x.gateway),
            }
        }),
        "stackfabric_nat_rule" => c
            .list_nat_rules(lreq(&t, &v))
            .await?
            .into_inner()
            .items
            .into_iter()
            .find(|x| x.tenant == t && x.vpc == v && x.name == name)
            .map(|x| {
                let mut o = obj! {
                    "tenant" => vs(&x.tenant), "vpc" => vs(&x.vpc), "name" => vs(&x.name),
                };
                o.extend(nat_attrs(x.kind.as_ref()));
                o
            }),
        "stackfabric_static_route" => c
            .list_routes(lreq(&t, &v))
            .await?
            .into_inner()
            .items
            .into_iter()
            .find(|x| x.tenant == t && x.vpc == v && x.name == name)
            .map(|x| {
                obj! {
                    "tenant" => vs(&x.tenant), "vpc" => vs(&x.vpc), "name" => vs(&x.name),
                    "prefix" => vs(&x.prefix), "nexthop" => vs(&x.nexthop),
                }
            }),
        "stackfabric_public_pool" => c
            .list_pools(pb::Empty {})
            .await?
            .into_inner()
            .items
            .into_iter()
            .find(|x| x.name == name)
            .map(|x| obj! {"name" => vs(&x.name), "cidr" => vs(&x.cidr), "site" => vs(&x.site)}),
        "stackfabric_port_binding" => {
            found(c.get_port_binding(oref(&t, "", &name)).await)?.map(|x| {
                obj! {
                    "tenant" => vs(&x.tenant), "name" => vs(&x.name), "vpc" => vs(&x.vpc),
                    "network" => vs(&x.network), "node" => vs(&x.node), "ip" => vs(&x.ip),
                    "mac" => vs(&x.mac), "interface" => vs(&x.interface), "vlan" => vn(x.vlan),
                }
            })
        }
        "stackfabric_acl_list" => found(c.get_acl_list(oref(&t, &v, &name)).await)?.map(|x| {
            obj! {
                "tenant" => vs(&x.tenant), "vpc" => vs(&x.vpc), "name" => vs(&x.name),
                "default_action" => vs(&x.default_action), "tiers" => vl(&x.tiers),
                "rule" => Value::List(x.rules.iter().map(acl_rule_out).collect()),
            }
        }),
        other => match ops::read(c, other, o).await? {
            Some(r) => r,
            None => return Err(Status::unimplemented(format!("unknown resource {other}"))),
        },
    })
}

/// Reads an object just written. A new VPC's gateway placement is filled in asynchronously:
/// wait (up to 15 s) for it so the state does not change on the next refresh.
pub async fn read_settled(c: &mut Client, ty: &str, o: &Obj) -> Result<Option<Obj>, Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = read(c, ty, o).await?;
        let unplaced = ty == "stackfabric_vpc"
            && r.as_ref()
                .is_some_and(|x| x.get("primary_gateway").and_then(|v| v.as_str()) == Some(""));
        if !unplaced || tokio::time::Instant::now() >= deadline {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn create(c: &mut Client, ty: &str, o: &Obj) -> Result<(), Status> {
    let (t, v, name) = (s(o, "tenant"), s(o, "vpc"), s(o, "name"));
    match ty {
        "stackfabric_tenant" => {
            c.create_tenant(pb::Tenant {
                name,
                description: s(o, "description"),
            })
            .await?;
        }
        "stackfabric_vpc" => {
            c.create_vpc(pb::Vpc {
                tenant: t,
                name,
                cidr: s(o, "cidr"),
                site: s(o, "site"),
                ..Default::default()
            })
            .await?;
        }
        "stackfabric_network" => {
            c.create_network(pb::Network {
                ipv6_prefix: String::new(),
                tenant: t,
                vpc: v,
                name,
                cidr: s(o, "cidr"),
                vni: n(o, "vni"),
                gateway: s(o, "gateway"),
            })
            .await?;
        }
        "stackfabric_nat_rule" => {
            c.create_nat_rule(pb::NatRule {
                tenant: t,
                vpc: v,
                name,
                kind: nat_kind(o),
            })
            .await?;
        }
        "stackfabric_static_route" => {
            c.create_route(pb::Route {
                tenant: t,
                vpc: v,
                name,
                prefix: s(o, "prefix"),
                nexthop: s(o, "nexthop"),
            })
            .await?;
        }
        "stackfabric_public_pool" => {
            c.create_pool(pb::Pool {
                name,
                cidr: s(o, "cidr"),
                site: s(o, "site"),
            })
            .await?;
        }
        "stackfabric_port_binding" => {
            c.create_port_binding(pb::PortBinding {
                ipv6: String::new(),
                tenant: t,
                name,
                vpc: v,
                network: s(o, "network"),
                node: s(o, "node"),
                ip: s(o, "ip"),
                mac: s(o, "mac"),
                interface: s(o, "interface"),
                vlan: n(o, "vlan"),
            })
            .await?;
        }
        "stackfabric_acl_list" => {
            c.apply_acl_list(acl_in(o)).await?;
        }
        other => {
            if !ops::create(c, other, o).await? {
                return Err(Status::unimplemented(format!("unknown resource {other}")));
            }
        }
    }
    Ok(())
}

/// In-place update; only resources with non-force-new attributes reach here.
pub async fn update(c: &mut Client, ty: &str, o: &Obj) -> Result<(), Status> {
    match ty {
        "stackfabric_acl_list" => {
            c.apply_acl_list(acl_in(o)).await?;
            Ok(())
        }
        other => Err(Status::unimplemented(format!(
            "{other} cannot be updated in place"
        ))),
    }
}

pub async fn delete(c: &mut Client, ty: &str, o: &Obj) -> Result<(), Status> {
    let (t, v, name) = (s(o, "tenant"), s(o, "vpc"), s(o, "name"));
    let r = match ty {
        "stackfabric_tenant" => c.delete_tenant(oref("", "", &name)).await,
        "stackfabric_vpc" => c.delete_vpc(oref(&t, "", &name)).await,
        "stackfabric_network" => c.delete_network(oref(&t, &v, &name)).await,
        "stackfabric_nat_rule" => c.delete_nat_rule(oref(&t, &v, &name)).await,
        "stackfabric_static_route" => c.delete_route(oref(&t, &v, &name)).await,
        "stackfabric_public_pool" => c.delete_pool(oref("", "", &name)).await,
        "stackfabric_port_binding" => c.delete_port_binding(oref(&t, "", &name)).await,
        "stackfabric_acl_list" => c.delete_acl_list(oref(&t, &v, &name)).await,
        other => match ops::delete(c, other, o).await {
            Some(r) => r,
            None => return Err(Status::unimplemented(format!("unknown resource {other}"))),
        },
    };
    match r {
        Ok(_) => Ok(()),
        // Already gone (e.g. deleted with sfctl): the goal of a delete is met.
        Err(e) if e.code() == Code::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn read_data(c: &mut Client, ty: &str, cfg: &Obj) -> Result<Obj, Status> {
    match ty {
        "stackfabric_fleet_status" => {
            let f = c.get_fleet_status(pb::Empty {}).await?.into_inner();
            let all = !f.nodes.is_empty() && f.nodes.iter().all(|n| n.in_sync);
            let nodes = f
                .nodes
                .iter()
                .map(|n| {
                    Value::Map(obj! {
                        "name" => vs(&n.name), "role" => vs(&n.role), "lease" => vs(&n.lease),
                        "applied_revision" => vn(n.applied_revision as i64),
                        "desired_revision" => vn(n.desired_revision as i64),
                        "in_sync" => Value::Bool(n.in_sync), "errors" => vl(&n.errors),
                    })
                })
                .collect();
            Ok(obj! {
                "intent_revision" => vn(f.intent_revision as i64),
                "leader" => vs(&f.leader), "replicas" => vl(&f.replicas),
                "nodes" => Value::List(nodes), "all_in_sync" => Value::Bool(all),
            })
        }
        "stackfabric_gateway_placement" => {
            let tenant = s(cfg, "tenant");
            let p = c.list_placements(pb::Empty {}).await?.into_inner();
            let items = p
                .items
                .iter()
                .filter(|x| tenant.is_empty() || x.tenant == tenant)
                .map(|x| {
                    Value::Map(obj! {
                        "tenant" => vs(&x.tenant), "vpc" => vs(&x.vpc), "vpc_id" => vn(x.vpc_id),
                        "primary" => vs(&x.primary), "standby" => vs(&x.standby),
                    })
                })
                .collect();
            Ok(obj! {
                "tenant" => cfg.get("tenant").cloned().unwrap_or(Value::Null),
                "placements" => Value::List(items), "drained" => vl(&p.drained),
            })
        }
        other => Err(Status::unimplemented(format!(
            "unknown data source {other}"
        ))),
    }
}
