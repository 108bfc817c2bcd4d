//! Conversions between wire messages (`sf_proto::v1`) and the model (`sf_core`), and from
//! validation/store errors to `tonic::Status` — the only place errors become RPC statuses.

use sf_core::model::{Network, Node, NodeRole, PortBinding, Tenant, Vpc};
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
    })
}
pub fn vpc_out(v: &Vpc) -> pb::Vpc {
    pb::Vpc {
        tenant: v.tenant.clone(),
        name: v.name.clone(),
        cidr: v.cidr.to_string(),
        site: v.site.clone(),
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
    })
}
pub fn network_out(n: &Network) -> pb::Network {
    pb::Network {
        tenant: n.tenant.clone(),
        vpc: n.vpc.clone(),
        name: n.name.clone(),
        cidr: n.cidr.to_string(),
        vni: n.vni,
        gateway: n.gateway.to_string(),
    }
}

pub fn port_in(p: pb::PortBinding) -> Result<PortBinding, Status> {
    Ok(PortBinding {
        ip: parse("port.ip", &p.ip)?,
        mac: (!p.mac.trim().is_empty()).then(|| p.mac.trim().to_lowercase()),
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
