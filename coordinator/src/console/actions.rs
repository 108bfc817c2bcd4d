//! The console's day-2 actions (`POST /api/action`, JSON `{"action": ..., fields}`): drain
//! and undrain a gateway; create and delete VPCs, tiers, NAT rules and load balancers. Each
//! builds the FabricApi request sfctl would send and calls the same handler in-process, so a
//! refusal carries the API's own message (`{"error": ..., "code": ...}`, HTTP 400/403/404/409).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sf_proto::v1 as pb;
use sf_proto::v1::fabric_api_server::FabricApi;
use tonic::{Code, Status};

use super::{not_logged_in, Console};
use crate::identity::Role;

/// A string field of the action (empty when absent).
fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(x) => x.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A number field; empty is 0, anything else not a number is refused like sfctl's flag parser.
fn n(v: &Value, k: &str) -> Result<u32, Status> {
    let t = s(v, k);
    if t.is_empty() {
        return Ok(0);
    }
    t.parse()
        .map_err(|_| Status::invalid_argument(format!("invalid {k}: {t:?} is not a number")))
}

fn object_ref(v: &Value) -> pb::ObjectRef {
    pb::ObjectRef {
        tenant: s(v, "tenant"),
        vpc: s(v, "vpc"),
        name: s(v, "name"),
    }
}

/// `IP:PORT[:WEIGHT]` items (sfctl's `--backend` syntax) separated by commas or spaces.
fn backends(text: &str) -> Result<Vec<pb::Backend>, Status> {
    text.split([',', ' '])
        .filter(|b| !b.is_empty())
        .map(|b| {
            let bad = || {
                Status::invalid_argument(format!(
                    "invalid backend {b:?}: not IP:PORT or IP:PORT:WEIGHT"
                ))
            };
            let parts: Vec<&str> = b.split(':').collect();
            let (ip, port, weight) = match parts.as_slice() {
                [ip, port] => (*ip, *port, "0"),
                [ip, port, w] => (*ip, *port, *w),
                _ => return Err(bad()),
            };
            Ok(pb::Backend {
                ip: ip.to_string(),
                port: port.parse().map_err(|_| bad())?,
                weight: weight.parse().map_err(|_| bad())?,
                health: String::new(),
            })
        })
        .collect()
}

fn nat_rule(v: &Value) -> Result<pb::NatRule, Status> {
    use pb::nat_rule::Kind;
    let kind = match s(v, "kind").as_str() {
        "snat" => Kind::Snat(pb::Snat {
            public_ip: s(v, "public_ip"),
        }),
        "static_nat" => Kind::StaticNat(pb::StaticNat {
            public_ip: s(v, "public_ip"),
            private_ip: s(v, "private_ip"),
        }),
        "port_forward" => Kind::PortForward(pb::PortForward {
            public_ip: s(v, "public_ip"),
            protocol: s(v, "protocol"),
            public_port: n(v, "public_port")?,
            private_ip: s(v, "private_ip"),
            private_port: n(v, "private_port")?,
        }),
        other => {
            return Err(Status::invalid_argument(format!(
                "invalid nat.kind: {other:?} is not snat, static_nat or port_forward"
            )))
        }
    };
    Ok(pb::NatRule {
        tenant: s(v, "tenant"),
        vpc: s(v, "vpc"),
        name: s(v, "name"),
        kind: Some(kind),
    })
}

fn load_balancer(v: &Value) -> Result<pb::LoadBalancer, Status> {
    Ok(pb::LoadBalancer {
        tenant: s(v, "tenant"),
        vpc: s(v, "vpc"),
        name: s(v, "name"),
        vip: s(v, "vip"),
        protocol: s(v, "protocol"),
        port: n(v, "port")?,
        backends: backends(&s(v, "backends"))?,
        health_type: s(v, "health_type"),
        health_path: s(v, "health_path"),
        ..Default::default()
    })
}

/// Runs one action with the session's role; the committed revision on success.
pub async fn run(c: &Console, role: Role, v: &Value) -> Result<u64, Status> {
    let api = &c.api;
    let rq = |m: &str, msg| Console::request(m, msg, role);
    let done = |r: tonic::Response<pb::WriteResult>| r.into_inner().revision;
    Ok(match s(v, "action").as_str() {
        "drain" => done(api.drain_gateway(rq("DrainGateway", object_ref(v))).await?),
        "undrain" => done(
            api.undrain_gateway(rq("UndrainGateway", object_ref(v)))
                .await?,
        ),
        "delete_vpc" => done(api.delete_vpc(rq("DeleteVpc", object_ref(v))).await?),
        "delete_network" => done(
            api.delete_network(rq("DeleteNetwork", object_ref(v)))
                .await?,
        ),
        "delete_nat" => done(
            api.delete_nat_rule(rq("DeleteNatRule", object_ref(v)))
                .await?,
        ),
        "delete_lb" => done(
            api.delete_load_balancer(rq("DeleteLoadBalancer", object_ref(v)))
                .await?,
        ),
        "create_vpc" => {
            let vpc = pb::Vpc {
                tenant: s(v, "tenant"),
                name: s(v, "name"),
                cidr: s(v, "cidr"),
                site: s(v, "site"),
                ..Default::default()
            };
            let r = Console::request("CreateVpc", vpc, role);
            done(api.create_vpc(r).await?)
        }
        "create_network" => {
            let net = pb::Network {
                tenant: s(v, "tenant"),
                vpc: s(v, "vpc"),
                name: s(v, "name"),
                cidr: s(v, "cidr"),
                vni: n(v, "vni")?,
                gateway: s(v, "gateway"),
                ..Default::default()
            };
            let r = Console::request("CreateNetwork", net, role);
            api.create_network(r).await?.into_inner().revision
        }
        "create_nat" => {
            let r = Console::request("CreateNatRule", nat_rule(v)?, role);
            done(api.create_nat_rule(r).await?)
        }
        "create_lb" => {
            let r = Console::request("CreateLoadBalancer", load_balancer(v)?, role);
            done(api.create_load_balancer(r).await?)
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown action {other:?}"
            )))
        }
    })
}

/// The HTTP status of a refused action.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `POST /api/action`.
pub async fn act(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Json(v): Json<Value>,
) -> Response {
    let Some(session) = c.sessions.check(&headers) else {
        return not_logged_in();
    };
    match run(&c, session.role, &v).await {
        Ok(revision) => {
            tracing::info!(user = %session.user, action = %s(&v, "action"), revision, "console action");
            Json(json!({ "revision": revision })).into_response()
        }
        Err(st) => (
            http_status(st.code()),
            Json(json!({"error": st.message(), "code": format!("{:?}", st.code())})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_ip_port_and_optional_weight() {
        let b = backends("10.0.0.1:80, 10.0.0.2:8080:3").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[1].ip.as_str(), b[1].port, b[1].weight),
            ("10.0.0.2", 8080, 3)
        );
        assert!(backends("10.0.0.1").is_err());
        assert!(backends("10.0.0.1:http").is_err());
    }

    #[test]
    fn a_nat_rule_needs_a_known_kind() {
        let v = json!({"kind": "port_forward", "public_port": "80", "private_port": 8080});
        let Some(pb::nat_rule::Kind::PortForward(p)) = nat_rule(&v).unwrap().kind else {
            panic!("not a port forward");
        };
        assert_eq!((p.public_port, p.private_port), (80, 8080));
        assert!(nat_rule(&json!({"kind": "dnat"})).is_err());
    }
}
