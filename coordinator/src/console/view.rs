//! What the console shows, as one JSON document: the fabric as nodes and links, the fleet,
//! latency, and tenants -> VPCs -> tiers -> ports with NAT, load balancers, ACLs and Direct
//! Connects. Everything is read through the FabricApi handlers (the same answers sfctl gets),
//! then arranged for drawing; `GET /api/events` pushes it again whenever it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sf_proto::v1 as pb;
use sf_proto::v1::fabric_api_server::FabricApi;
use tonic::Status;

use super::{not_logged_in, Console};
use crate::identity::Role;

/// How often the live stream looks for a change.
const TICK: Duration = Duration::from_millis(500);

/// Everything the page needs, read at one moment.
pub struct Reads {
    pub fleet: pb::FleetStatus,
    pub nodes: Vec<pb::Node>,
    pub placements: pb::PlacementList,
    pub tenants: Vec<pb::Tenant>,
    pub vpcs: Vec<pb::Vpc>,
    pub networks: Vec<pb::Network>,
    pub ports: Vec<pb::PortBinding>,
    pub nat: Vec<pb::NatRule>,
    pub lbs: Vec<pb::LoadBalancer>,
    pub acls: Vec<pb::AclList>,
    pub dcs: Vec<pb::DirectConnect>,
    pub pools: Vec<pb::Pool>,
}

async fn read(c: &Console, role: Role) -> Result<Reads, Status> {
    let api = &c.api;
    let all = pb::ListRequest::default;
    let req = |m: &str| Console::request(m, pb::Empty {}, role);
    let list = |m: &str| Console::request(m, all(), role);
    Ok(Reads {
        fleet: api
            .get_fleet_status(req("GetFleetStatus"))
            .await?
            .into_inner(),
        nodes: api.list_nodes(req("ListNodes")).await?.into_inner().items,
        placements: api
            .list_placements(req("ListPlacements"))
            .await?
            .into_inner(),
        tenants: api
            .list_tenants(req("ListTenants"))
            .await?
            .into_inner()
            .items,
        vpcs: api.list_vpcs(list("ListVpcs")).await?.into_inner().items,
        networks: api
            .list_networks(list("ListNetworks"))
            .await?
            .into_inner()
            .items,
        ports: api
            .list_port_bindings(list("ListPortBindings"))
            .await?
            .into_inner()
            .items,
        nat: api
            .list_nat_rules(list("ListNatRules"))
            .await?
            .into_inner()
            .items,
        lbs: api
            .list_load_balancers(list("ListLoadBalancers"))
            .await?
            .into_inner()
            .items,
        acls: api
            .list_acl_lists(list("ListAclLists"))
            .await?
            .into_inner()
            .items,
        dcs: api
            .list_direct_connects(list("ListDirectConnects"))
            .await?
            .into_inner()
            .items,
        pools: api.list_pools(req("ListPools")).await?.into_inner().items,
    })
}

/// The page's document for a session of `role`.
pub async fn snapshot(c: &Console, role: Role) -> Result<Value, Status> {
    let r = read(c, role).await?;
    let latency = c.latency.series(sf_metrics::now_ms());
    Ok(document(&r, role, json!(latency)))
}

/// Arranges the reads for the page (pure, so it is unit-tested without a coordinator).
pub fn document(r: &Reads, role: Role, latency: Value) -> Value {
    let (nodes, links) = topology(r);
    json!({
        "role": role.as_str(),
        "revision": r.fleet.intent_revision,
        "leader": r.fleet.leader,
        "served_by": r.fleet.served_by,
        "nodes": nodes,
        "links": links,
        "drained": r.placements.drained,
        "tenants": tenants(r),
        "nat": r.nat,
        "load_balancers": r.lbs,
        "acls": r.acls,
        "direct_connects": r.dcs,
        "pools": r.pools,
        "latency": latency,
    })
}

/// A node's colour class: drained (grey), down (red), error, syncing (amber) or ok (green).
pub fn node_state(s: Option<&pb::NodeStatus>, drained: bool) -> &'static str {
    match s {
        _ if drained => "drained",
        None => "down",
        Some(s) if s.lease != "up" => "down",
        Some(s) if !s.errors.is_empty() => "error",
        Some(s) if !s.in_sync => "syncing",
        Some(_) => "ok",
    }
}

/// Where a node is drawn: switches whose fabric ports all face switches are spines.
fn tier(n: &pb::Node, roles: &BTreeMap<&str, &str>) -> &'static str {
    match n.role.as_str() {
        "switch" => {
            let faces_servers = n
                .fabric_ports
                .iter()
                .any(|p| roles.get(p.as_str()).is_some_and(|r| *r != "switch"));
            if faces_servers {
                "leaf"
            } else {
                "spine"
            }
        }
        "gateway" => "gateway",
        _ => "hypervisor",
    }
}

/// Nodes (inventory plus the internet edge and customer DCs) and links. Fabric ports are
/// named after their peer (the lab's and the packaged inventory's convention); a port naming
/// no node is an external edge. A fabric link takes the BGP state both ends' agents report
/// for it ([`link_state`]); a Direct Connect's link carries its BGP session state as the
/// serving gateway reports it.
fn topology(r: &Reads) -> (Vec<Value>, Vec<Value>) {
    let roles: BTreeMap<&str, &str> = r
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.role.as_str()))
        .collect();
    let status: BTreeMap<&str, &pb::NodeStatus> =
        r.fleet.nodes.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out = Vec::new();
    // (a, b) -> (state, the sessions seen at each end)
    let mut links: BTreeMap<(String, String), (String, Value)> = BTreeMap::new();
    for n in &r.nodes {
        out.push(node_json(
            r,
            n,
            status.get(n.name.as_str()).copied(),
            &roles,
        ));
        for p in &n.fabric_ports {
            if roles.contains_key(p.as_str()) {
                let (a, b) = if n.name < *p {
                    (&n.name, p)
                } else {
                    (p, &n.name)
                };
                let ends = [end(&status, a, b), end(&status, b, a)];
                let state = link_state(&ends).to_string();
                links.insert((a.clone(), b.clone()), (state, json!(ends)));
            } else {
                out.push(json!({"name": p, "role": "edge", "tier": "edge", "state": "external"}));
                links.insert((n.name.clone(), p.clone()), ("external".into(), json!([])));
            }
        }
    }
    for dc in &r.dcs {
        let name = format!("{}/{}/{}", dc.tenant, dc.vpc, dc.name);
        let state = if dc.bgp_state.is_empty() {
            "unknown".to_string()
        } else {
            dc.bgp_state.clone()
        };
        out.push(json!({"name": name, "role": "customer-dc", "tier": "edge",
            "state": if state.eq_ignore_ascii_case("established") { "ok" } else { "down" }}));
        links.insert((dc.switch.clone(), name), (state, json!([])));
    }
    let mut seen = BTreeSet::new();
    out.retain(|n| seen.insert(n["name"].to_string()));
    let links = links
        .into_iter()
        .map(|((a, b), (state, ends))| json!({"a": a, "b": b, "state": state, "ends": ends}))
        .collect();
    (out, links)
}

/// One inventory node as the page draws it, with its status and BGP sessions.
fn node_json(
    r: &Reads,
    n: &pb::Node,
    s: Option<&pb::NodeStatus>,
    roles: &BTreeMap<&str, &str>,
) -> Value {
    let drained = r.placements.drained.contains(&n.name);
    let serving: Vec<String> = r
        .placements
        .items
        .iter()
        .filter(|p| p.primary == n.name)
        .map(|p| format!("{}/{}", p.tenant, p.vpc))
        .collect();
    json!({
        "name": n.name, "role": n.role, "tier": tier(n, roles), "asn": n.asn,
        "loopback": n.loopback, "drained": drained,
        "state": node_state(s, drained),
        "lease": s.map(|s| s.lease.as_str()).unwrap_or("down"),
        "in_sync": s.is_some_and(|s| s.in_sync),
        "applied_revision": s.map(|s| s.applied_revision).unwrap_or(0),
        "desired_revision": s.map(|s| s.desired_revision).unwrap_or(0),
        "errors": s.map(|s| s.errors.clone()).unwrap_or_default(),
        "serving": serving,
        "bgp_sessions": s.map(|s| s.bgp_sessions.clone()).unwrap_or_default(),
        "bgp_error": s.map(|s| s.bgp_error.as_str()).unwrap_or(""),
    })
}

/// What `node` reports of its BGP session towards `peer`: the session whose configured
/// neighbor (the interface, named after the peer) or learnt hostname is `peer`. `state` is
/// "" when the node reports no such session (no status, FRR unread, or not configured).
fn end(status: &BTreeMap<&str, &pb::NodeStatus>, node: &str, peer: &str) -> Value {
    let s = status.get(node).copied();
    let session = s.and_then(|s| {
        s.bgp_sessions
            .iter()
            .find(|b| b.peer == peer || b.hostname == peer)
    });
    json!({
        "node": node,
        "lease": s.map(|s| s.lease.as_str()).unwrap_or("down"),
        "state": session.map(|b| b.state.as_str()).unwrap_or(""),
        "prefixes": session.map(|b| b.prefixes.clone()).unwrap_or_default(),
    })
}

/// A fabric link's colour from its two ends: "up" when both report the session
/// Established, "down" when either reports it in another state or holds no lease (a dead
/// node's sessions are down whatever was last reported), "unknown" when an end reports
/// nothing about it.
pub fn link_state(ends: &[Value; 2]) -> &'static str {
    let state = |e: &Value| e["state"].as_str().unwrap_or("").to_string();
    if ends.iter().any(|e| e["lease"] != "up") {
        return "down";
    }
    if ends
        .iter()
        .any(|e| !state(e).is_empty() && state(e) != "Established")
    {
        return "down";
    }
    if ends.iter().all(|e| state(e) == "Established") {
        "up"
    } else {
        "unknown"
    }
}

/// tenants -> VPCs (with serving and standby gateway) -> tiers -> ports.
fn tenants(r: &Reads) -> Vec<Value> {
    r.tenants
        .iter()
        .map(|t| {
            let vpcs: Vec<Value> = r
                .vpcs
                .iter()
                .filter(|v| v.tenant == t.name)
                .map(|v| {
                    let tiers: Vec<Value> = r
                        .networks
                        .iter()
                        .filter(|n| n.tenant == v.tenant && n.vpc == v.name)
                        .map(|n| {
                            let ports: Vec<&pb::PortBinding> = r
                                .ports
                                .iter()
                                .filter(|p| {
                                    p.tenant == n.tenant && p.vpc == n.vpc && p.network == n.name
                                })
                                .collect();
                            json!({"tier": n, "ports": ports})
                        })
                        .collect();
                    json!({"vpc": v, "tiers": tiers})
                })
                .collect();
            json!({"name": t.name, "description": t.description, "vpcs": vpcs})
        })
        .collect()
}

/// A cheap mark of everything the document shows: the index revision (intent, leases and
/// agents' status reports all move it), the acks on agents' streams, and the latency samples.
fn fingerprint(c: &Console) -> u64 {
    let fabric = &c.api.fabric;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fabric.revision().hash(&mut h);
    let names: Vec<String> = fabric.with_view(|v, _| v.intent.nodes.keys().cloned().collect());
    for n in names {
        if let Some(a) = fabric.ack_of(&n) {
            (n, a.applied_revision, a.errors).hash(&mut h);
        }
    }
    serde_json::to_string(&c.latency.series(sf_metrics::now_ms()))
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// `GET /api/events`: Server-Sent Events, one `state` event with the whole document at once
/// and again whenever it changes; the stream ends when the session does.
pub async fn events(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.sessions.check(&headers).is_none() {
        return not_logged_in();
    }
    let stream = futures::stream::unfold((c, headers, None), |(c, h, mut last)| async move {
        loop {
            let s = c.sessions.check(&h)?;
            let mark = fingerprint(&c);
            if last != Some(mark) {
                if let Ok(doc) = snapshot(&c, s.role).await {
                    let ev = Event::default().event("state").data(doc.to_string());
                    return Some((Ok::<_, Infallible>(ev), (c, h, Some(mark))));
                }
            }
            last = Some(mark);
            tokio::time::sleep(TICK).await;
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: &str, ports: &[&str]) -> pb::Node {
        pb::Node {
            name: name.into(),
            role: role.into(),
            fabric_ports: ports.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }
    }

    fn status(name: &str, lease: &str, in_sync: bool) -> pb::NodeStatus {
        pb::NodeStatus {
            name: name.into(),
            lease: lease.into(),
            in_sync,
            ..Default::default()
        }
    }

    fn reads() -> Reads {
        Reads {
            fleet: pb::FleetStatus {
                nodes: vec![
                    status("spine1", "up", true),
                    status("leaf1", "up", true),
                    status("hv1", "up", false),
                    status("gw1", "up", true),
                ],
                ..Default::default()
            },
            nodes: vec![
                node("spine1", "switch", &["leaf1"]),
                node("leaf1", "switch", &["spine1", "hv1", "gw1", "internet"]),
                node("hv1", "hypervisor", &["leaf1"]),
                node("gw1", "gateway", &["leaf1"]),
                node("hv2", "hypervisor", &["leaf1"]),
            ],
            placements: pb::PlacementList {
                items: vec![],
                drained: vec!["gw1".into()],
            },
            tenants: vec![],
            vpcs: vec![],
            networks: vec![],
            ports: vec![],
            nat: vec![],
            lbs: vec![],
            acls: vec![],
            dcs: vec![pb::DirectConnect {
                tenant: "t".into(),
                vpc: "v".into(),
                name: "dc1".into(),
                switch: "leaf1".into(),
                bgp_state: "Established".into(),
                ..Default::default()
            }],
            pools: vec![],
        }
    }

    #[test]
    fn nodes_are_coloured_by_lease_sync_and_drain() {
        let d = document(&reads(), Role::Admin, json!({}));
        let state = |n: &str| {
            d["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == n)
                .map(|x| (x["tier"].clone(), x["state"].clone()))
                .unwrap()
        };
        assert_eq!(state("spine1"), (json!("spine"), json!("ok")));
        assert_eq!(state("leaf1"), (json!("leaf"), json!("ok")));
        assert_eq!(state("hv1"), (json!("hypervisor"), json!("syncing")));
        assert_eq!(state("hv2"), (json!("hypervisor"), json!("down")));
        assert_eq!(state("gw1"), (json!("gateway"), json!("drained")));
        assert_eq!(state("internet"), (json!("edge"), json!("external")));
        assert_eq!(state("t/v/dc1").1, json!("ok"));
    }

    fn session(peer: &str, state: &str) -> pb::BgpSession {
        pb::BgpSession {
            peer: peer.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn links_follow_fabric_ports_and_bgp_state_of_both_ends() {
        let mut r = reads();
        let sessions = |r: &mut Reads, node: &str, s: Vec<pb::BgpSession>| {
            let n = r.fleet.nodes.iter_mut().find(|n| n.name == node).unwrap();
            n.bgp_sessions = s;
        };
        sessions(&mut r, "spine1", vec![session("leaf1", "Established")]);
        sessions(
            &mut r,
            "leaf1",
            vec![
                session("spine1", "Established"),
                session("hv1", "Active"),
                session("hv2", "Active"),
            ],
        );
        // hv1 says its side is up; leaf1 sees the session down: the link is down.
        sessions(&mut r, "hv1", vec![session("leaf1", "Established")]);
        let d = document(&r, Role::Admin, json!({}));
        let links = d["links"].as_array().unwrap();
        let state = |a: &str, b: &str| {
            links
                .iter()
                .find(|l| l["a"] == a && l["b"] == b)
                .map(|l| l["state"].clone())
        };
        assert_eq!(
            state("leaf1", "spine1"),
            Some(json!("up")),
            "one link per pair"
        );
        assert_eq!(state("spine1", "leaf1"), None);
        assert_eq!(state("hv1", "leaf1"), Some(json!("down")));
        assert_eq!(
            state("hv2", "leaf1"),
            Some(json!("down")),
            "hv2 has no lease"
        );
        // Both leases up, neither end reports the session: not known to be up.
        assert_eq!(state("gw1", "leaf1"), Some(json!("unknown")));
        assert_eq!(state("leaf1", "internet"), Some(json!("external")));
        assert_eq!(state("leaf1", "t/v/dc1"), Some(json!("Established")));
        let hv1 = links.iter().find(|l| l["a"] == "hv1").unwrap();
        assert_eq!(hv1["ends"][0]["state"], "Established");
        assert_eq!(hv1["ends"][1]["state"], "Active");
    }
}
