//! FabricApi mapping of the operations-side resources (see `schema_ops`): load balancers,
//! Direct Connects, inventory nodes and gateway drains. Each has read (Get, or the drained
//! list of ListPlacements), create and delete; only the drain is also "updated" (it has no
//! attribute that can change without replacing it).
use std::collections::BTreeMap;

use sf_proto::v1 as pb;
use tonic::Status;

use super::{found, n, oref, s, sl, vl, vn, vs, Client, Obj};
use crate::msgpack::Value;

/// The `backend` blocks as the API's backends (weight 0 = the API's default, 1).
fn backends_in(o: &Obj) -> Vec<pb::Backend> {
    let Some(Value::List(items)) = o.get("backend") else {
        return vec![];
    };
    items
        .iter()
        .filter_map(|b| match b {
            Value::Map(m) => Some(pb::Backend {
                ip: s(m, "ip"),
                port: n(m, "port"),
                weight: n(m, "weight"),
                health: String::new(),
            }),
            _ => None,
        })
        .collect()
}

pub(super) fn lb_in(o: &Obj) -> pb::LoadBalancer {
    pb::LoadBalancer {
        tenant: s(o, "tenant"),
        vpc: s(o, "vpc"),
        name: s(o, "name"),
        vip: s(o, "vip"),
        protocol: s(o, "protocol"),
        port: n(o, "port"),
        backends: backends_in(o),
        health_type: s(o, "health_type"),
        health_path: s(o, "health_path"),
        health_expect_status: n(o, "health_expect_status"),
        interval_ms: n(o, "interval_ms"),
        timeout_ms: n(o, "timeout_ms"),
        rise: n(o, "rise"),
        fall: n(o, "fall"),
        table_size: n(o, "table_size"),
        source_cidrs: sl(o, "source_cidrs"),
        ..Default::default()
    }
}

pub(super) fn lb_out(x: &pb::LoadBalancer) -> Obj {
    let backends = x
        .backends
        .iter()
        .map(|b| {
            Value::Map(obj! {"ip" => vs(&b.ip), "port" => vn(b.port), "weight" => vn(b.weight)})
        })
        .collect();
    let health: BTreeMap<String, Value> = x
        .backends
        .iter()
        .map(|b| (format!("{}:{}", b.ip, b.port), vs(&b.health)))
        .collect();
    obj! {
        "tenant" => vs(&x.tenant), "vpc" => vs(&x.vpc), "name" => vs(&x.name),
        "vip" => vs(&x.vip), "protocol" => vs(&x.protocol), "port" => vn(x.port),
        "backend" => Value::List(backends),
        "health_type" => vs(&x.health_type), "health_path" => vs(&x.health_path),
        "health_expect_status" => vn(x.health_expect_status),
        "interval_ms" => vn(x.interval_ms), "timeout_ms" => vn(x.timeout_ms),
        "rise" => vn(x.rise), "fall" => vn(x.fall), "table_size" => vn(x.table_size),
        "source_cidrs" => vl(&x.source_cidrs),
        "gateway" => vs(&x.gateway), "table_digest" => vs(&x.table_digest),
        "backend_health" => Value::Map(health),
    }
}

pub(super) fn dc_in(o: &Obj) -> pb::DirectConnect {
    pb::DirectConnect {
        tenant: s(o, "tenant"),
        vpc: s(o, "vpc"),
        name: s(o, "name"),
        switch: s(o, "switch"),
        interface: s(o, "interface"),
        vlan: n(o, "vlan"),
        local_address: s(o, "local_address"),
        peer_address: s(o, "peer_address"),
        local_asn: n(o, "local_asn"),
        customer_asn: n(o, "customer_asn"),
        accept: sl(o, "accept"),
        ..Default::default()
    }
}

pub(super) fn dc_out(x: &pb::DirectConnect) -> Obj {
    let big = |v: u64| vn(i64::try_from(v).unwrap_or(i64::MAX));
    obj! {
        "tenant" => vs(&x.tenant), "vpc" => vs(&x.vpc), "name" => vs(&x.name),
        "switch" => vs(&x.switch), "interface" => vs(&x.interface), "vlan" => vn(x.vlan),
        "local_address" => vs(&x.local_address), "peer_address" => vs(&x.peer_address),
        "local_asn" => vn(x.local_asn), "customer_asn" => vn(x.customer_asn),
        "accept" => vl(&x.accept), "vni" => vn(x.vni), "gateway" => vs(&x.gateway),
        "bgp_state" => vs(&x.bgp_state), "prefixes_received" => big(x.prefixes_received),
        "prefixes_accepted" => big(x.prefixes_accepted), "prefixes_sent" => big(x.prefixes_sent),
    }
}

pub(super) fn node_in(o: &Obj) -> pb::Node {
    pb::Node {
        name: s(o, "name"),
        role: s(o, "role"),
        site: s(o, "site"),
        asn: n(o, "asn"),
        loopback: s(o, "loopback"),
        fabric_ports: sl(o, "fabric_ports"),
    }
}

pub(super) fn node_out(x: &pb::Node) -> Obj {
    obj! {
        "name" => vs(&x.name), "role" => vs(&x.role), "site" => vs(&x.site),
        "asn" => vn(x.asn), "loopback" => vs(&x.loopback), "fabric_ports" => vl(&x.fabric_ports),
    }
}

/// Reads one of this module's types; None for a type it does not own.
pub(super) async fn read(c: &mut Client, ty: &str, o: &Obj) -> Result<Option<Option<Obj>>, Status> {
    let (t, v, name) = (s(o, "tenant"), s(o, "vpc"), s(o, "name"));
    Ok(Some(match ty {
        "stackfabric_load_balancer" => {
            found(c.get_load_balancer(oref(&t, &v, &name)).await)?.map(|x| lb_out(&x))
        }
        "stackfabric_direct_connect" => {
            found(c.get_direct_connect(oref(&t, &v, &name)).await)?.map(|x| dc_out(&x))
        }
        "stackfabric_node" => found(c.get_node(oref("", "", &name)).await)?.map(|x| node_out(&x)),
        "stackfabric_gateway_drain" => {
            let gw = s(o, "gateway");
            let p = c.list_placements(pb::Empty {}).await?.into_inner();
            p.drained.contains(&gw).then(|| obj! {"gateway" => vs(&gw)})
        }
        _ => return Ok(None),
    }))
}

/// Creates one of this module's types; false for a type it does not own.
pub(super) async fn create(c: &mut Client, ty: &str, o: &Obj) -> Result<bool, Status> {
    match ty {
        "stackfabric_load_balancer" => {
            c.create_load_balancer(lb_in(o)).await?;
        }
        "stackfabric_direct_connect" => {
            c.create_direct_connect(dc_in(o)).await?;
        }
        "stackfabric_node" => {
            c.create_node(node_in(o)).await?;
        }
        "stackfabric_gateway_drain" => {
            c.drain_gateway(oref("", "", &s(o, "gateway"))).await?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Deletes one of this module's types; None for a type it does not own.
pub(super) async fn delete(
    c: &mut Client,
    ty: &str,
    o: &Obj,
) -> Option<Result<tonic::Response<pb::WriteResult>, Status>> {
    let (t, v, name) = (s(o, "tenant"), s(o, "vpc"), s(o, "name"));
    Some(match ty {
        "stackfabric_load_balancer" => c.delete_load_balancer(oref(&t, &v, &name)).await,
        "stackfabric_direct_connect" => c.delete_direct_connect(oref(&t, &v, &name)).await,
        "stackfabric_node" => c.delete_node(oref("", "", &name)).await,
        "stackfabric_gateway_drain" => c.undrain_gateway(oref("", "", &s(o, "gateway"))).await,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb() -> pb::LoadBalancer {
        pb::LoadBalancer {
            tenant: "t".into(),
            vpc: "v".into(),
            name: "web".into(),
            vip: "203.0.113.42".into(),
            protocol: "tcp".into(),
            port: 80,
            backends: vec![
                pb::Backend {
                    ip: "10.0.0.1".into(),
                    port: 8080,
                    weight: 3,
                    health: "up".into(),
                },
                pb::Backend {
                    ip: "10.0.0.2".into(),
                    port: 8080,
                    weight: 1,
                    health: "down".into(),
                },
            ],
            health_type: "http".into(),
            health_path: "/ok".into(),
            health_expect_status: 204,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 3,
            table_size: 65537,
            source_cidrs: vec!["198.51.100.0/24".into()],
            gateway: "gw1".into(),
            table_digest: "abc".into(),
        }
    }

    #[test]
    fn load_balancer_round_trips_without_output_fields() {
        let x = lb();
        let o = lb_out(&x);
        let back = lb_in(&o);
        let mut want = x.clone();
        want.gateway.clear();
        want.table_digest.clear();
        for b in &mut want.backends {
            b.health.clear();
        }
        assert_eq!(back, want);
        let Some(Value::Map(h)) = o.get("backend_health") else {
            panic!("no backend_health map")
        };
        assert_eq!(h.get("10.0.0.2:8080"), Some(&vs("down")));
    }

    #[test]
    fn direct_connect_and_node_round_trip() {
        let d = pb::DirectConnect {
            tenant: "t".into(),
            vpc: "v".into(),
            name: "dc".into(),
            switch: "leaf1".into(),
            interface: "eth5".into(),
            vlan: 100,
            local_address: "169.254.100.1/30".into(),
            peer_address: "169.254.100.2".into(),
            local_asn: 64512,
            customer_asn: 65010,
            accept: vec!["192.168.0.0/16 le 24".into()],
            ..Default::default()
        };
        assert_eq!(dc_in(&dc_out(&d)), d);
        let nd = pb::Node {
            name: "leaf9".into(),
            role: "switch".into(),
            site: "s1".into(),
            asn: 65009,
            loopback: "10.255.0.9".into(),
            fabric_ports: vec!["eth1".into(), "eth2".into()],
        };
        assert_eq!(node_in(&node_out(&nd)), nd);
    }
}
