//! The Netris Java SDK's wire contract, without the SDK: the REST API is served exactly as in
//! production (hyper HTTP/1, Title-Case headers) on an in-memory store, driven through
//! CloudStack's Netris provider calls in their order, and every answer is checked against the
//! SDK's Gson models (`docs/contract/netris-sdk-models.md`: field names, JSON types, objects vs
//! arrays, integers). Gson throws on a shape mismatch and CloudStack cannot catch that, so a
//! shape regression here is a CloudStack outage.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sf_coordinator::fabric::Fabric;
use sf_coordinator::rest::{self, auth};
use sf_store::intent::IntentStore;
use sf_store::keys::Keys;
use sf_store::mem::MemStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// The SDK's models (Gson field name -> JSON type), as far as CloudStack's calls return them.
// Types: S string, I integer, N number (BigDecimal), B boolean, O anything, [T] list of T,
// a model name an object of that model.

fn model(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "Envelope" => &[("isSuccess", "B"), ("message", "S")],
        "AuthResponse" => &[
            ("isSuccess", "B"),
            ("message", "S"),
            ("data", "DataResponse"),
        ],
        "DataResponse" => &[
            ("user_id", "I"),
            ("login", "S"),
            ("name", "S"),
            ("email", "S"),
        ],
        "GetSiteBody" => &[("id", "I"), ("name", "S"), ("asn", "I"), ("vlanRange", "S")],
        "TenantResponse" => &[
            ("id", "N"),
            ("tenant_id", "N"),
            ("name", "S"),
            ("description", "S"),
        ],
        "VPCListing" => &[
            ("id", "I"),
            ("name", "S"),
            ("adminTenant", "VPCAdminTenant"),
            ("guestTenant", "[IdName]"),
            ("tags", "[S]"),
            ("createdDate", "I"),
            ("modifiedDate", "I"),
            ("isSystem", "B"),
            ("isDefault", "B"),
            ("vni", "I"),
            ("vlans", "[VPCListingVlans]"),
        ],
        "VPCAdminTenant" | "IdName" => &[("id", "I"), ("name", "S")],
        "IdNameN" => &[("id", "N"), ("name", "S")],
        "VPCListingVlans" => &[("siteId", "I"), ("vlan", "I")],
        "VPCId" | "AclId" | "ResAddEditBodyData" => &[("id", "I")],
        "InlineResponse2004Data" => &[("id", "I"), ("name", "S")],
        "InlineResponse20015Data" => &[("id", "N")],
        "VPCResource" => &[
            ("id", "I"),
            ("site", "IdName"),
            ("bgp", "[IdName]"),
            ("roh", "[IdName]"),
            ("vnet", "[IdName]"),
            ("ipam", "[VPCResourceIpam]"),
            ("route", "[IdName]"),
            ("allocation", "[VPCResourceIpam]"),
        ],
        "VPCResourceIpam" => &[("id", "I"), ("name", "S"), ("tenant", "I")],
        "IpTreeAllocation" => &[
            ("id", "N"),
            ("vpc", "IdName"),
            ("name", "S"),
            ("description", "S"),
            ("tenant", "IdNameN"),
            ("ipFamily", "S"),
            ("readonly", "S"),
            ("prefix", "S"),
            ("type", "S"),
            ("children", "[O]"),
        ],
        "IpTreeSubnet" => &[
            ("id", "N"),
            ("vpc", "IpTreeSubnetVpc"),
            ("parentID", "N"),
            ("allocationID", "N"),
            ("name", "S"),
            ("description", "S"),
            ("tenant", "IdNameN"),
            ("sites", "[IdNameN]"),
            ("globalRouting", "B"),
            ("ipFamily", "S"),
            ("purpose", "S"),
            ("readonly", "S"),
            ("prefix", "S"),
            ("defaultGateway", "S"),
            ("type", "S"),
            ("children", "[IpTreeSubnet]"),
        ],
        "IpTreeSubnetVpc" | "RoutesBodyVpcVpc" => &[
            ("id", "I"),
            ("name", "S"),
            ("isDefault", "B"),
            ("isSystem", "B"),
        ],
        "VnetsBody" => &[
            ("id", "N"),
            ("name", "S"),
            ("tenant", "IdNameN"),
            ("sites", "[IdNameN]"),
            ("vpc", "IpTreeSubnetVpc"),
            ("vlan", "I"),
            ("vxlanID", "I"),
            ("guestTenants", "[IdNameN]"),
            ("state", "S"),
            ("provisioning", "B"),
            ("vlanAware", "B"),
            ("l3vpn", "B"),
            ("nativeVlan", "I"),
            ("vlans", "S"),
            ("gateways", "[VnetsBodyGateways]"),
            ("tags", "[S]"),
        ],
        "VnetsBodyGateways" => &[
            ("prefix", "S"),
            ("vlan", "N"),
            ("dhcpLeaseCount", "N"),
            ("dhcpEnabled", "B"),
            ("dhcp", "O"),
        ],
        "NatGetBody" => &[
            ("id", "I"),
            ("name", "S"),
            ("site", "IdName"),
            ("vpc", "IdName"),
            ("state", "NatBodyStateState"),
            ("action", "NatBodyActionAction"),
            ("protocol", "NatBodyProtocolProtocol"),
            ("sourceAddress", "S"),
            ("sourcePort", "S"),
            ("destinationAddress", "S"),
            ("destinationPort", "S"),
            ("dnatToIP", "S"),
            ("dnatToPort", "I"),
            ("portGroup", "O"),
            ("comment", "S"),
            ("creator", "IdName"),
            ("editor", "IdName"),
            ("createdDate", "N"),
            ("modifiedDate", "N"),
        ],
        "NatBodyStateState" => &[("label", "S"), ("value", "S"), ("status", "S")],
        "NatBodyActionAction" | "NatBodyProtocolProtocol" => &[("label", "S"), ("value", "S")],
        "L4LoadBalancerItem" => &[
            ("id", "I"),
            ("name", "S"),
            ("tenantId", "I"),
            ("siteId", "I"),
            ("protocol", "S"),
            ("ip", "S"),
            ("port", "I"),
            ("healthcheck", "L4LoadBalancerItemHealthcheck"),
            ("status", "S"),
            ("internal", "I"),
            ("tenantName", "S"),
            ("siteName", "S"),
            ("backendIps", "[L4LoadBalancerBackendItemResponse]"),
        ],
        "L4LoadBalancerItemHealthcheck" => {
            &[("protocol", "S"), ("timeout", "I"), ("requestPath", "S")]
        }
        "L4LoadBalancerBackendItemResponse" => &[
            ("id", "I"),
            ("ip", "S"),
            ("port", "I"),
            ("status", "S"),
            ("response", "S"),
            ("maintenance", "B"),
        ],
        "AclGetBody" => &[
            ("id", "I"),
            ("name", "S"),
            ("vpc", "IdName"),
            ("comment", "S"),
            ("action", "S"),
            ("dst_port_from", "N"),
            ("dst_port_group", "N"),
            ("dst_port_to", "N"),
            ("dst_prefix", "S"),
            ("established", "N"),
            ("icmp_type", "O"),
            ("proto", "S"),
            ("reverse", "S"),
            ("src_port_from", "N"),
            ("src_port_group", "N"),
            ("src_port_to", "N"),
            ("src_prefix", "S"),
            ("valid_until", "S"),
        ],
        "RoutesGetBody" => &[
            ("id", "I"),
            ("name", "S"),
            ("prefix_length", "I"),
            ("prefix", "S"),
            ("next_hop", "S"),
            ("description", "S"),
            ("site_id", "N"),
            ("stateStatus", "S"),
            ("switches", "[IdName]"),
            ("filteredSwitches", "[IdName]"),
            ("vpc", "RoutesBodyVpcVpc"),
            ("create_date", "N"),
            ("modified_date", "N"),
        ],
        other => panic!("no model {other} in the test's table"),
    }
}

/// Enum fields: Gson turns an unknown value into null (CloudStack then misreads it).
fn enum_values(model: &str, field: &str) -> Option<&'static [&'static str]> {
    Some(match (model, field) {
        ("IpTreeSubnet", "purpose") => &[
            "common",
            "load-balancer",
            "loopback",
            "management",
            "nat",
            "bgp",
        ],
        ("IpTreeSubnet" | "IpTreeAllocation", "ipFamily") => &["ipv4", "ipv6"],
        ("IpTreeSubnet" | "IpTreeAllocation", "type") => &["allocation", "subnet"],
        ("VnetsBody", "state") => &["active", "disabled", "unmanaged"],
        ("NatBodyStateState", "label") => &["Enabled", "Disabled"],
        ("NatBodyStateState", "value") => &["enabled", "disabled"],
        ("NatBodyStateState", "status") => &["success", "danger"],
        ("NatBodyActionAction", "label") => &["DNAT", "SNAT", "ACCEPT", "MASQUERADE"],
        ("NatBodyActionAction", "value") => &["DNAT", "SNAT", "ACCEPT_SNAT", "MASQUERADE"],
        ("NatBodyProtocolProtocol", "label") => &["ALL", "TCP", "UDP", "ICMP"],
        ("NatBodyProtocolProtocol", "value") => &["all", "tcp", "udp", "icmp"],
        ("L4LoadBalancerItem", "protocol") => &["TCP", "UDP"],
        ("L4LoadBalancerItem", "status") => &["enable", "disable"],
        ("L4LoadBalancerBackendItemResponse", "status") => &["ok", "failed"],
        ("RoutesGetBody", "stateStatus") => &["active", "disabled"],
        _ => return None,
    })
}

fn check_type(path: &str, ty: &str, v: &Value, errs: &mut Vec<String>) {
    if v.is_null() {
        return; // every SDK field is nullable (boxed), Gson leaves it null
    }
    let ok = match ty {
        "S" => v.is_string(),
        "I" => v.is_i64() || v.is_u64(),
        "N" => v.is_number(),
        "B" => v.is_boolean(),
        "O" => true,
        t if t.starts_with('[') => {
            let inner = &t[1..t.len() - 1];
            match v.as_array() {
                Some(a) => {
                    for (i, x) in a.iter().enumerate() {
                        check_type(&format!("{path}[{i}]"), inner, x, errs);
                    }
                    true
                }
                None => false,
            }
        }
        m => {
            if v.is_object() {
                check_model(path, m, v, errs);
                true
            } else {
                false
            }
        }
    };
    if !ok {
        errs.push(format!("{path}: expected {ty}, got {v}"));
    }
}

fn check_model(path: &str, name: &str, v: &Value, errs: &mut Vec<String>) {
    for (field, ty) in model(name) {
        if let Some(x) = v.get(field) {
            check_type(&format!("{path}.{field}"), ty, x, errs);
            if let (Some(vals), Some(s)) = (enum_values(name, field), x.as_str()) {
                if !vals.contains(&s) {
                    errs.push(format!("{path}.{field}: {s:?} is not one of {vals:?}"));
                }
            }
        }
    }
}

/// Checks a whole answer: the envelope, then `data` (`data_ty` as in [`check_type`]).
fn check(what: &str, body: &Value, data_ty: &str) {
    let mut errs = vec![];
    check_model("$", "Envelope", body, &mut errs);
    if body.get("isSuccess") != Some(&json!(true)) {
        errs.push(format!("isSuccess is not true: {body}"));
    }
    match body.get("data") {
        Some(d) if !d.is_null() => check_type("$.data", data_ty, d, &mut errs),
        _ if data_ty == "O" => {}
        _ => errs.push("$.data missing".into()),
    }
    assert!(errs.is_empty(), "{what}: {errs:#?}\n{body:#}");
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client (header names exactly as sent).

struct Client {
    addr: std::net::SocketAddr,
    cookie: String,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    body: Option<&Value>,
) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: sf\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        req += &format!("Cookie: {cookie}\r\n");
    }
    if !body.is_empty() {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req += "\r\n";
    req += &body;
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a full HTTP answer");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = serde_json::from_str(rest).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let a = http(self.addr, method, path, &self.cookie, body.as_ref()).await;
        assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
        a.body
    }
}

async fn serve() -> std::net::SocketAddr {
    serve_on(Arc::new(MemStore::new())).await
}

async fn serve_on(kv: Arc<MemStore>) -> std::net::SocketAddr {
    serve_store(kv).await.0
}

/// Serves the REST API on `kv`; returns its address and the coordinator's index.
async fn serve_store(kv: Arc<dyn sf_store::KvStore>) -> (std::net::SocketAddr, Arc<Fabric>) {
    let fabric = Fabric::new(IntentStore::new(kv.clone(), Keys::new("/t")));
    tokio::spawn(fabric.clone().run());
    tokio::spawn(fabric.clone().run_placement());
    let users = auth::Users::parse(&format!("cs:{}\n", auth::hash_password("pw"))).unwrap();
    let state = rest::Rest::new(
        fabric.clone(),
        users,
        Duration::from_secs(3600),
        "lab",
        "",
        "Admin",
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(rest::serve_title_case(l, rest::router(state)));
    (addr, fabric)
}

fn id(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.get("id").and_then(Value::as_u64))
        .unwrap_or_else(|| panic!("no id in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudstack_calls_answer_in_the_sdk_models() {
    let addr = serve().await;

    // Login: `Set-Cookie` in exactly that case, HttpOnly (ApiClient.authenticate).
    let a = http(
        addr,
        "POST",
        "/api/auth",
        "",
        Some(&json!({"user": "cs", "password": "pw", "authSchemeID": 1})),
    )
    .await;
    assert_eq!(a.status, 200);
    let set = a
        .headers
        .iter()
        .find(|(k, _)| k == "Set-Cookie")
        .unwrap_or_else(|| panic!("no `Set-Cookie` header (exact case): {:?}", a.headers))
        .1
        .clone();
    assert!(set.contains("HttpOnly"), "{set}");
    check("POST /api/auth", &a.body, "O");
    let c = Client {
        addr,
        cookie: set.split(';').next().unwrap().to_string(),
    };
    check(
        "GET /api/auth",
        &c.call("GET", "/api/auth", None).await,
        "O",
    );

    let b = c.call("GET", "/api/sites", None).await;
    check("GET /api/sites", &b, "[GetSiteBody]");
    let b = c.call("GET", "/api/tenants", None).await;
    check("GET /api/tenants", &b, "[TenantResponse]");
    let tenant = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Admin")
        .unwrap()["id"]
        .as_u64()
        .unwrap();

    // Provider set-up: the zone's public range in the System VPC.
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/allocation",
            Some(
                json!({"name": "Z1-203.0.113.0/24", "prefix": "203.0.113.0/24",
                "tenant": {"id": tenant, "name": "Admin"}, "vpc": {"id": 1}}),
            ),
        )
        .await;
    check("POST ipam/allocation", &b, "InlineResponse2004Data");
    let zone_alloc = id(&b["data"]);
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/subnet",
            Some(
                json!({"name": "Z1-203.0.113.40/32", "prefix": "203.0.113.40/32",
                "purpose": "nat", "tenant": {"id": tenant, "name": "Admin"}, "vpc": {"id": 1},
                "sites": [{"id": 1, "name": "lab"}], "globalRouting": false}),
            ),
        )
        .await;
    check("POST ipam/subnet", &b, "InlineResponse2004Data");
    let b = c.call("GET", "/api/v2/ipam/subnets", None).await;
    check("GET ipam/subnets", &b, "[IpTreeSubnet]");
    let sn = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["prefix"] == "203.0.113.40/32")
        .unwrap();
    assert_eq!(sn["allocationID"], json!(zone_alloc), "{sn}");
    let b = c.call("GET", "/api/v2/ipam", None).await;
    check("GET ipam", &b, "[IpTreeAllocation]");

    // Two VPCs with an allocation each.
    let mut vpcs = vec![];
    for (n, cidr) in [(5, "10.20.0.0/16"), (6, "10.30.0.0/16")] {
        let name = format!("D1-A2-Z1-V{n}-vpc{n}");
        let b = c
            .call(
                "POST",
                "/api/v2/vpc",
                Some(
                    json!({"name": name, "adminTenant": {"id": tenant, "name": "Admin"},
                    "guestTenant": [], "tags": []}),
                ),
            )
            .await;
        check("POST vpc", &b, "VPCListing");
        let vpc = id(&b["data"]);
        let b = c
            .call(
                "POST",
                "/api/v2/ipam/allocation",
                Some(json!({"name": format!("{name}-alloc"), "prefix": cidr,
                    "tenant": {"id": tenant, "name": "Admin"}, "vpc": {"id": vpc, "name": name}})),
            )
            .await;
        check("POST vpc allocation", &b, "InlineResponse2004Data");
        vpcs.push((vpc, name));
    }
    let (vpc, vname) = vpcs[0].clone();
    let b = c
        .call(
            "PUT",
            &format!("/api/v2/vpc/{vpc}"),
            Some(json!({"id": vpc, "name": format!("{vname}-renamed"),
                "adminTenant": {"id": tenant, "name": "Admin"}, "guestTenant": [], "tags": []})),
        )
        .await;
    check("PUT vpc", &b, "VPCId");
    let b = c.call("GET", "/api/v2/vpc", None).await;
    check("GET vpc", &b, "[VPCListing]");

    // A tier.
    let b = c
        .call(
            "POST",
            "/api/v2/vnet",
            Some(
                json!({"name": format!("{vname}-N9-tier1"), "vpc": {"id": vpc},
                "tenant": {"id": tenant, "name": "Admin"}, "sites": [{"id": 1, "name": "lab"}],
                "vxlanID": 1500001, "gateways": [{"prefix": "10.20.1.1/24", "dhcpEnabled": false}],
                "tags": []}),
            ),
        )
        .await;
    check("POST vnet", &b, "ResAddEditBodyData");
    c.call(
        "POST",
        "/api/v2/vnet",
        Some(
            json!({"name": format!("{}-N10-tier1", vpcs[1].1), "vpc": {"id": vpcs[1].0},
            "vxlanID": 1500002, "gateways": [{"prefix": "10.30.1.1/24"}]}),
        ),
    )
    .await;
    // A dual-stack tier: IPv6 allocation and subnet, the vNet's second gateway; kept.
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/allocation",
            Some(
                json!({"name": format!("{vname}-fd00:20::/48"), "prefix": "fd00:20::/48",
                "tenant": {"id": tenant, "name": "Admin"}, "vpc": {"id": vpc}}),
            ),
        )
        .await;
    check("POST ipam/allocation IPv6", &b, "InlineResponse2004Data");
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/subnet",
            Some(
                json!({"name": format!("{vname}-N11-tier6"), "prefix": "fd00:20:0:3::/64",
                "purpose": "common", "globalRouting": true, "vpc": {"id": vpc},
                "tenant": {"id": tenant, "name": "Admin"}, "sites": [{"id": 1, "name": "lab"}]}),
            ),
        )
        .await;
    check("POST ipam/subnet IPv6", &b, "InlineResponse2004Data");
    let b = c
        .call(
            "POST",
            "/api/v2/vnet",
            Some(
                json!({"name": format!("{vname}-N11-tier6"), "vpc": {"id": vpc},
                "vxlanID": 1500003, "gateways": [{"prefix": "10.20.3.1/24"},
                {"prefix": "fd00:20:0:3::1/64"}]}),
            ),
        )
        .await;
    check("POST vnet dual-stack", &b, "ResAddEditBodyData");
    let v6 = id(&b["data"]);
    let b = c.call("GET", "/api/v2/ipam/subnets", None).await;
    check("GET ipam/subnets IPv6", &b, "[IpTreeSubnet]");
    assert!(
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["ipFamily"] == "ipv6"
                && s["prefix"] == "fd00:20:0:3::/64"
                && s["allocationID"].is_u64()),
        "{b}"
    );
    let b = c
        .call("GET", &format!("/api/v2/vnet?filterByVpc={vpc}"), None)
        .await;
    let t6 = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == json!(v6))
        .unwrap();
    assert_eq!(
        t6["gateways"][1]["prefix"],
        json!("fd00:20:0:3::1/64"),
        "{t6}"
    );
    c.call("DELETE", &format!("/api/v2/vnet/{v6}"), None).await;

    let b = c
        .call(
            "GET",
            &format!("/api/v2/vnet?filterBySites=1&filterByVpc={vpc}"),
            None,
        )
        .await;
    check("GET vnet", &b, "[VnetsBody]");
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    let b = c
        .call(
            "GET",
            &format!("/api/v2/vnet?filterBySites=1&filterByVpc={}", vpcs[1].0),
            None,
        )
        .await;
    assert_eq!(
        b["data"].as_array().unwrap().len(),
        1,
        "filterByVpc ignored: {b}"
    );
    assert_eq!(b["data"][0]["vpc"]["id"], json!(vpcs[1].0));

    // SNAT and a port forward; both list with object enums and an integer port.
    let b = c
        .call(
            "POST",
            "/api/v2/nat",
            Some(
                json!({"name": format!("{vname}-SNAT"), "site": {"id": 1, "name": "lab"},
                "vpc": {"id": vpc}, "state": "enabled", "action": "SNAT", "protocol": "all",
                "sourceAddress": "10.20.0.0/16", "destinationAddress": "0.0.0.0/0",
                "snatToIP": "203.0.113.40/32"}),
            ),
        )
        .await;
    check("POST nat", &b, "InlineResponse20015Data");
    let b = c
        .call(
            "POST",
            "/api/v2/nat",
            Some(
                json!({"name": format!("{vname}-DNAT-R3"), "site": {"id": 1, "name": "lab"},
                "vpc": {"id": vpc}, "state": "enabled", "action": "DNAT", "protocol": "tcp",
                "sourceAddress": "0.0.0.0/0", "sourcePort": "1-65535",
                "destinationAddress": "203.0.113.40/32", "destinationPort": "8080",
                "dnatToIP": "10.20.1.11/32", "dnatToPort": 80}),
            ),
        )
        .await;
    let dnat = id(&b["data"]);
    let b = c.call("GET", "/api/v2/nat", None).await;
    check("GET nat", &b, "[NatGetBody]");
    let r = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(dnat))
        .unwrap();
    assert_eq!(r["dnatToPort"], json!(80));
    assert_eq!(r["action"]["value"], json!("DNAT"));
    let b = c
        .call(
            "GET",
            &format!("/api/v2/nat?filterByVpc={}", vpcs[1].0),
            None,
        )
        .await;
    assert_eq!(b["data"], json!([]), "filterByVpc ignored: {b}");

    // An LB with backendIps; PUT changes the backends.
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/subnet",
            Some(
                json!({"name": "Z1-203.0.113.44/32", "prefix": "203.0.113.44/32",
                "purpose": "load-balancer", "tenant": {"id": tenant, "name": "Admin"},
                "vpc": {"id": 1}}),
            ),
        )
        .await;
    check("POST lb subnet", &b, "InlineResponse2004Data");
    let b = c
        .call(
            "POST",
            "/api/v2/l4lb",
            Some(
                json!({"name": format!("{vname}-LB4"), "protocol": "TCP", "ip": "203.0.113.44",
                "port": 80, "status": "enable", "automatic": false, "healthCheck": "None",
                "tenant": {"id": tenant, "name": "Admin"}, "site": {"id": 1, "name": "lab"},
                "vpc": {"id": vpc}, "backendIps": [{"ip": "10.20.1.11", "port": 80}]}),
            ),
        )
        .await;
    check("POST l4lb", &b, "I");
    let lb = id(&b["data"]);
    c.call(
        "PUT",
        &format!("/api/v2/l4lb/{lb}"),
        Some(
            json!({"name": format!("{vname}-LB4"), "protocol": "TCP", "ip": "203.0.113.44",
            "port": 80, "status": "enable", "healthCheck": "None", "vpc": {"id": vpc},
            "backendIps": [{"ip": "10.20.1.11", "port": 80}, {"ip": "10.20.1.12", "port": 80}]}),
        ),
    )
    .await;
    let b = c.call("GET", "/api/v2/l4lb", None).await;
    check("GET l4lb", &b, "[L4LoadBalancerItem]");
    let l = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == json!(lb))
        .unwrap();
    assert_eq!(
        l["backendIps"].as_array().unwrap().len(),
        2,
        "PUT kept: {l}"
    );

    // ACL.
    let b = c
        .call(
            "POST",
            "/api/acl",
            Some(
                json!({"name": format!("{vname}-N9-ACL1"), "action": "permit", "proto": "tcp",
                "src_prefix": "0.0.0.0/0", "src_port_from": 1, "src_port_to": 65535,
                "dst_prefix": "10.20.1.0/24", "dst_port_from": 22, "dst_port_to": 22,
                "vpc": {"id": vpc}, "comment": "", "established": 0, "reverse": "yes"}),
            ),
        )
        .await;
    assert!(
        b["id"].is_u64(),
        "InlineResponse200 wants a top-level id: {b}"
    );
    let b = c.call("GET", "/api/acl", None).await;
    check("GET acl", &b, "[AclGetBody]");

    // Static routes of both VPCs: name = prefix, filtered per VPC.
    for (v, _) in &vpcs {
        for p in ["192.168.50.0/24", "192.168.51.0/24"] {
            let hop = if *v == vpc {
                "10.20.1.11"
            } else {
                "10.30.1.11"
            };
            let b = c
                .call(
                    "POST",
                    "/api/routes",
                    Some(json!({"prefix": p, "next_hop": hop, "description": format!("D1-A2-Z1-V{v}"),
                        "site_id": 1, "stateStatus": "active", "switches": [],
                        "vpc": {"id": v}})),
                )
                .await;
            check("POST routes", &b, "InlineResponse2004Data");
        }
    }
    let b = c
        .call(
            "GET",
            &format!("/api/routes?filterBySites=1&filterByVpc={vpc}"),
            None,
        )
        .await;
    check("GET routes", &b, "[RoutesGetBody]");
    let routes = b["data"].as_array().unwrap().clone();
    assert_eq!(routes.len(), 2, "filterByVpc ignored: {b}");
    for r in &routes {
        assert_eq!(r["name"], r["prefix"], "{r}");
    }
    let rid = routes[0]["id"].as_u64().unwrap();
    let b = c
        .call(
            "PUT",
            "/api/routes",
            Some(
                json!({"route_id": rid, "prefix": routes[0]["prefix"], "next_hop": "10.20.1.12",
                "description": format!("D1-A2-Z1-V{vpc}"), "site_id": 1, "stateStatus": "active",
                "switches": []}),
            ),
        )
        .await;
    check("PUT routes", &b, "O");

    // VPC resources: one object per site with allocation[].
    let b = c
        .call("GET", &format!("/api/v2/vpc/{vpc}/resources"), None)
        .await;
    check("GET vpc resources", &b, "[VPCResource]");
    assert_eq!(
        b["data"][0]["allocation"].as_array().unwrap().len(),
        2,
        "{b}"
    );

    // Tear down in CloudStack's order; the VPC delete answers data as an object.
    for r in &routes {
        c.call("DELETE", "/api/routes", Some(json!({"id": r["id"]})))
            .await;
    }
    let b = c.call("DELETE", &format!("/api/v2/l4lb/{lb}"), None).await;
    check("DELETE l4lb", &b, "[O]");
    let b = c.call("GET", "/api/v2/nat", None).await;
    for r in b["data"].as_array().unwrap() {
        if r["vpc"]["id"] == json!(vpc) {
            c.call("DELETE", &format!("/api/v2/nat/{}", r["id"]), None)
                .await;
        }
    }
    let b = c.call("GET", "/api/acl", None).await;
    let acls: Vec<Value> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    c.call(
        "DELETE",
        "/api/acl",
        Some(json!({"id": acls, "tenantsID": tenant.to_string()})),
    )
    .await;
    let b = c
        .call("GET", &format!("/api/v2/vnet?filterByVpc={vpc}"), None)
        .await;
    for v in b["data"].as_array().unwrap() {
        c.call("DELETE", &format!("/api/v2/vnet/{}", v["id"]), None)
            .await;
    }
    let b = c
        .call("GET", &format!("/api/v2/vpc/{vpc}/resources"), None)
        .await;
    for a in b["data"][0]["allocation"].as_array().unwrap() {
        c.call(
            "DELETE",
            &format!("/api/v2/ipam/allocation/{}", a["id"]),
            None,
        )
        .await;
    }
    let b = c.call("DELETE", &format!("/api/v2/vpc/{vpc}"), None).await;
    check("DELETE vpc", &b, "VPCListing");
}

/// Logs in as `cs` and returns a client with the session cookie.
async fn login(addr: std::net::SocketAddr) -> Client {
    let a = http(
        addr,
        "POST",
        "/api/auth",
        "",
        Some(&json!({"user": "cs", "password": "pw"})),
    )
    .await;
    let set = a.headers.iter().find(|(k, _)| k == "Set-Cookie").unwrap();
    Client {
        addr,
        cookie: set.1.split(';').next().unwrap().to_string(),
    }
}

/// The `source_cidrs` of the one load balancer in the store (`None` without a load balancer).
async fn stored_lb_sources(kv: &MemStore) -> Option<Vec<String>> {
    use sf_store::KvStore;
    let (kvs, _) = kv.list("/t/intent/lbs/").await.unwrap();
    assert!(kvs.len() <= 1, "{kvs:?}");
    kvs.first().map(|e| {
        let v: Value = serde_json::from_slice(&e.value).unwrap();
        serde_json::from_value(v["source_cidrs"].clone()).unwrap_or_default()
    })
}

/// CloudStack limits an LB rule to source CIDRs with ACL records in the System VPC: a deny-all
/// `...-LBACL0-<rule>` and one permit per CIDR, `dst_prefix` = the VIP/32. They become the load
/// balancer's source list (enforced by the gateway), whichever order they arrive in, and go
/// with their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_acls_become_the_load_balancers_source_list() {
    let kv = Arc::new(MemStore::new());
    let c = login(serve_on(kv.clone()).await).await;
    let tenants = c.call("GET", "/api/tenants", None).await;
    let t = tenants["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Admin")
        .unwrap()
        .clone();
    let sys = json!({"id": 1});
    for (path, body) in [
        (
            "/api/v2/ipam/allocation",
            json!({"name": "Z1-203.0.113.0/24", "prefix": "203.0.113.0/24", "tenant": t, "vpc": sys}),
        ),
        (
            "/api/v2/ipam/subnet",
            json!({"name": "Z1-203.0.113.44/32", "prefix": "203.0.113.44/32", "purpose": "load-balancer", "tenant": t, "vpc": sys}),
        ),
        (
            "/api/v2/vpc",
            json!({"name": "D1-A2-Z1-V5-v", "adminTenant": t}),
        ),
    ] {
        c.call("POST", path, Some(body)).await;
    }
    let vpcs = c.call("GET", "/api/v2/vpc", None).await;
    let vpc = vpcs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "D1-A2-Z1-V5-v")
        .unwrap()["id"]
        .clone();
    c.call("POST", "/api/v2/ipam/allocation", Some(json!({"name": "D1-A2-Z1-V5-v", "prefix": "10.20.0.0/16", "tenant": t, "vpc": {"id": vpc}}))).await;
    c.call(
        "POST",
        "/api/v2/vnet",
        Some(
            json!({"name": "D1-A2-Z1-V5-N9-tier1", "vpc": {"id": vpc}, "tenant": t,
        "vxlanID": 1500001, "gateways": [{"prefix": "10.20.1.1/24"}]}),
        ),
    )
    .await;
    let lb = |port: u16| {
        json!({"name": "D1-A2-Z1-V5-LB7", "protocol": "TCP", "ip": "203.0.113.44", "port": port,
        "status": "enable", "automatic": false, "healthCheck": "None", "tenant": t, "vpc": {"id": vpc},
        "backendIps": [{"ip": "10.20.1.11", "port": 80}]})
    };
    let acl = |n: u32, action: &str, src: &str| {
        json!({"name": format!("D1-A2-Z1-V5-LBACL{n}-7"), "action": action,
        "proto": "tcp", "src_prefix": src, "src_port_from": 1, "src_port_to": 65535, "dst_prefix": "203.0.113.44/32",
        "dst_port_from": 80, "dst_port_to": 80, "vpc": sys, "comment": "", "established": 0})
    };
    // The deny-all first: the VIP admits nobody until a permit arrives.
    let deny = c
        .call("POST", "/api/acl", Some(acl(0, "deny", "0.0.0.0/0")))
        .await;
    c.call("POST", "/api/v2/l4lb", Some(lb(80))).await;
    assert_eq!(
        stored_lb_sources(&kv).await,
        Some(vec!["0.0.0.0/32".into()])
    );
    let permit = c
        .call(
            "POST",
            "/api/acl",
            Some(acl(1, "permit", "198.51.100.0/24")),
        )
        .await;
    assert!(
        permit["message"]
            .as_str()
            .unwrap()
            .contains("source rule of load balancer"),
        "{permit}"
    );
    c.call("POST", "/api/acl", Some(acl(2, "permit", "192.0.2.7/32")))
        .await;
    assert_eq!(
        stored_lb_sources(&kv).await,
        Some(vec!["192.0.2.7/32".into(), "198.51.100.0/24".into()])
    );
    // An LB update keeps the list; one on another port is no longer covered by the records.
    let id = c.call("GET", "/api/v2/l4lb", None).await["data"][0]["id"].clone();
    c.call("PUT", &format!("/api/v2/l4lb/{id}"), Some(lb(80)))
        .await;
    let upd = json!({"name": "D1-A2-Z1-V5-LB7", "backendIps": [{"ip": "10.20.1.12", "port": 80}]});
    c.call("PUT", &format!("/api/v2/l4lb/{id}"), Some(upd))
        .await;
    assert_eq!(stored_lb_sources(&kv).await.map(|v| v.len()), Some(2));
    c.call("PUT", &format!("/api/v2/l4lb/{id}"), Some(lb(8080)))
        .await;
    assert_eq!(stored_lb_sources(&kv).await, Some(vec![]));
    c.call("PUT", &format!("/api/v2/l4lb/{id}"), Some(lb(80)))
        .await;
    // Records deleted: the deny first leaves the permits; without records, everyone.
    c.call("DELETE", "/api/acl", Some(json!({"id": [deny["id"]]})))
        .await;
    assert_eq!(stored_lb_sources(&kv).await.map(|v| v.len()), Some(2));
    let ids: Vec<Value> = c.call("GET", "/api/acl", None).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    c.call("DELETE", "/api/acl", Some(json!({"id": ids}))).await;
    assert_eq!(stored_lb_sources(&kv).await, Some(vec![]));
}

/// `n` VPC records and `n` NAT records written straight into the store (as the REST layer
/// stores them), so the lists can be timed without `n` API round trips.
async fn seed(kv: &MemStore, n: u64) {
    use sf_coordinator::rest::meta::{Record, RestKeys, Spec};
    use sf_coordinator::rest::wire::NatSpec;
    use sf_store::KvStore;
    let keys = RestKeys::new("/t");
    for i in 0..n {
        let vpc = 1000 + 2 * i;
        let recs = [
            Record {
                id: vpc,
                name: format!("D1-A2-Z1-V{i}-bench"),
                tenant: "Admin".into(),
                vpc,
                spec: Spec::Vpc,
                sf: None,
            },
            Record {
                id: vpc + 1,
                name: format!("D1-A2-Z1-V{i}-DNAT-R{i}"),
                tenant: "Admin".into(),
                vpc,
                spec: Spec::Nat(NatSpec {
                    action: "DNAT".into(),
                    protocol: "TCP".into(),
                    state: "disabled".into(),
                    source_address: "0.0.0.0/0".into(),
                    source_port: "1-65535".into(),
                    destination_address: "203.0.113.9/32".into(),
                    destination_port: "8080".into(),
                    snat_to_ip: String::new(),
                    dnat_to_ip: "10.20.1.11/32".into(),
                    dnat_to_port: "80".into(),
                    comment: String::new(),
                }),
                sf: None,
            },
        ];
        for r in recs {
            kv.put(
                &keys.object(r.kind(), r.id),
                serde_json::to_vec(&r).unwrap(),
                0,
            )
            .await
            .unwrap();
        }
    }
}

/// Median wall time of `GET path` over `runs` calls.
async fn time_get(c: &Client, path: &str, runs: usize) -> (Duration, usize) {
    let mut t = vec![];
    let mut n = 0;
    for _ in 0..runs {
        let start = std::time::Instant::now();
        let b = c.call("GET", path, None).await;
        t.push(start.elapsed());
        n = b["data"].as_array().map(Vec::len).unwrap_or(0);
    }
    t.sort();
    (t[t.len() / 2], n)
}

/// CloudStack lists `GET /api/v2/vpc` and `GET /api/v2/nat` unfiltered on nearly every
/// operation: with 100 and with 10,000 VPCs and NAT rules every object is listed. The times are
/// figures, not checks: `deploy/bench.sh` runs this with `--nocapture` and prints each list at
/// 10,000 next to the same list at 100, measured in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vpc_and_nat_lists_with_100_and_10000_objects() {
    let mut figures = vec![];
    for n in [100u64, 10_000] {
        let kv = Arc::new(MemStore::new());
        seed(&kv, n).await;
        let c = login(serve_on(kv).await).await;
        let (vpc, nv) = time_get(&c, "/api/v2/vpc", 5).await;
        let (nat, nn) = time_get(&c, "/api/v2/nat", 5).await;
        assert_eq!((nv as u64, nn as u64), (n + 1, n));
        figures.push((vpc, nat));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ((v100, n100), (v10k, n10k)) = (figures[0], figures[1]);
    println!("figure,value,baseline,ratio");
    println!(
        "rest GET /api/v2/vpc ms at 10000 (baseline: at 100),{:.2},{:.2},{:.1}",
        ms(v10k),
        ms(v100),
        ms(v10k) / ms(v100)
    );
    println!(
        "rest GET /api/v2/nat ms at 10000 (baseline: at 100),{:.2},{:.2},{:.1}",
        ms(n10k),
        ms(n100),
        ms(n10k) / ms(n100)
    );
}

/// An in-memory store that counts the reads touching the REST metadata (`/t/rest/`).
#[derive(Default)]
struct CountingStore {
    inner: MemStore,
    rest_reads: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn count(&self, touches_rest: bool) {
        if touches_rest {
            self.rest_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn rest_reads(&self) -> usize {
        self.rest_reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl sf_store::KvStore for CountingStore {
    async fn get(&self, key: &str) -> sf_store::Result<Option<sf_store::KeyValue>> {
        self.count(key.starts_with("/t/rest/"));
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> sf_store::Result<(Vec<sf_store::KeyValue>, i64)> {
        self.count(prefix.starts_with("/t/rest/") || "/t/rest/".starts_with(prefix));
        self.inner.list(prefix).await
    }
    async fn txn(
        &self,
        compares: Vec<sf_store::Compare>,
        ops: Vec<sf_store::Op>,
    ) -> sf_store::Result<sf_store::TxnOutcome> {
        self.inner.txn(compares, ops).await
    }
    async fn watch(&self, prefix: &str, rev: i64) -> sf_store::Result<sf_store::WatchStream> {
        self.inner.watch(prefix, rev).await
    }
    async fn lease_grant(&self, ttl: i64) -> sf_store::Result<i64> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: i64) -> sf_store::Result<i64> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: i64) -> sf_store::Result<()> {
        self.inner.lease_revoke(lease).await
    }
}

/// The REST metadata comes from the coordinator's index, not from etcd per request: a request
/// right after a write sees the written record (read-your-writes), and a record another
/// replica writes (here: straight into the store) arrives through the watch, both without
/// reading `rest/` from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_metadata_is_read_from_the_index() {
    use sf_coordinator::rest::meta::{Record, RestKeys, Spec};
    use sf_store::KvStore;
    let kv = Arc::new(CountingStore::default());
    let (addr, fabric) = serve_store(kv.clone()).await;
    let c = login(addr).await;
    let t = c.call("GET", "/api/tenants", None).await["data"][0].clone();
    let before = kv.rest_reads();
    let b = c
        .call(
            "POST",
            "/api/v2/vpc",
            Some(json!({"name": "D1-A2-Z1-V7-a", "adminTenant": t})),
        )
        .await;
    let a = id(&b["data"]);
    // Read-your-writes, on a list (filtered, so never a cached answer) and a get.
    let l = c.call("GET", "/api/v2/vpc?vpc=D1-A2-Z1-V7-a", None).await;
    assert_eq!(l["data"][0]["id"], json!(a), "{l}");
    let g = c.call("GET", &format!("/api/v2/vpc/{a}"), None).await;
    assert_eq!(g["data"]["name"], json!("D1-A2-Z1-V7-a"), "{g}");
    // Another replica's record arrives through the watch.
    let r = Record {
        id: 500,
        name: "D1-A2-Z1-V8-b".into(),
        tenant: "Admin".into(),
        vpc: 500,
        spec: Spec::Vpc,
        sf: None,
    };
    let rev = kv
        .put(
            &RestKeys::new("/t").object(r.kind(), r.id),
            serde_json::to_vec(&r).unwrap(),
            0,
        )
        .await
        .unwrap();
    fabric.wait_for_revision(rev).await;
    let g = c.call("GET", "/api/v2/vpc/500", None).await;
    assert_eq!(g["data"]["name"], json!("D1-A2-Z1-V8-b"), "{g}");
    assert_eq!(
        kv.rest_reads(),
        before,
        "the REST metadata was read from the store"
    );
}

/// Serves the REST API on an in-memory store at `$SF_CONTRACT_SERVE` (e.g. `127.0.0.1:18080`,
/// user `cs`, password `pw`) for `$SF_CONTRACT_SECS` seconds (default 300), so the real Netris
/// Java SDK can be driven against it (`tests/e2e/sdk/CloudStackReplay.java`). Ignored unless
/// run by name with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn serve_for_the_sdk() {
    let Ok(addr) = std::env::var("SF_CONTRACT_SERVE") else {
        return;
    };
    let secs = std::env::var("SF_CONTRACT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let kv = Arc::new(MemStore::new());
    let fabric = Fabric::new(IntentStore::new(kv.clone(), Keys::new("/t")));
    tokio::spawn(fabric.clone().run());
    tokio::spawn(fabric.clone().run_placement());
    let users = auth::Users::parse(&format!("cs:{}\n", auth::hash_password("pw"))).unwrap();
    let state = rest::Rest::new(fabric, users, Duration::from_secs(3600), "lab", "", "Admin");
    let l = tokio::net::TcpListener::bind(addr.as_str()).await.unwrap();
    eprintln!("serving the REST API on {addr} for {secs} s");
    tokio::spawn(rest::serve_title_case(l, rest::router(state)));
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// The stored StackFabric objects under `/t/intent/{kind}/` (JSON), whose key ends `suffix`.
/// CloudStack's zone IPv6 range inside the site's IPv6 block (csv6). `setupZoneLevelPublicRange`
/// posts the zone's public IPv6 range (a /64 of the block) as a System VPC allocation: the
/// operator's pool that holds it is adopted (not a second, overlapping pool, which sf-core
/// refuses), and left in place when the allocation goes. A tier's /64 allocation (what
/// `createVnet` posts when none of the VPC's allocations holds it) in the same block is a
/// routed range of the VPC, and its vnet with the bare `::1` gateway is dual-stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_ipv6_range_inside_the_sites_pool_adopts_that_pool() {
    let kv = Arc::new(MemStore::new());
    IntentStore::new(kv.clone(), Keys::new("/t"))
        .create_pool(&sf_core::model::Pool {
            name: "public6".into(),
            cidr: "2001:db8:100::/40".parse().unwrap(),
            site: String::new(),
        })
        .await
        .unwrap();
    let addr = serve_on(kv.clone()).await;
    let c = login(addr).await;
    let b = c.call("GET", "/api/tenants", None).await;
    let tenant = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Admin")
        .unwrap()["id"]
        .clone();
    let t = json!({"id": tenant, "name": "Admin"});
    let site = json!([{"id": 1, "name": "lab"}]);
    let system = json!({"id": 1, "name": "System VPC"});
    let zone = "2001:db8:100:ff::/64";
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/allocation",
            Some(json!({"name": format!("Z1-{zone}"), "prefix": zone, "tenant": t, "vpc": system})),
        )
        .await;
    check(
        "POST ipam/allocation zone IPv6 /64",
        &b,
        "InlineResponse2004Data",
    );
    let zone_alloc = id(&b["data"]);
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/subnet",
            Some(
                json!({"name": format!("Z1-{zone}"), "prefix": zone, "purpose": "common",
                "tenant": t, "vpc": system, "sites": site}),
            ),
        )
        .await;
    let zone_subnet = id(&b["data"]);
    let pools = stored(&kv, "pools", "").await;
    assert_eq!(
        pools.len(),
        1,
        "the operator's pool adopted, no other: {pools:?}"
    );
    // A VPC with a routed dual-stack tier in the same block.
    let name = "D1-A2-Z1-V8-routed";
    let b = c
        .call(
            "POST",
            "/api/v2/vpc",
            Some(json!({"name": name, "adminTenant": t, "guestTenant": [], "tags": []})),
        )
        .await;
    let v = json!({"id": id(&b["data"]), "name": name});
    for p in ["10.80.0.0/16", "2001:db8:100:1000::/64"] {
        c.call(
            "POST",
            "/api/v2/ipam/allocation",
            Some(json!({"name": format!("{name}-{p}"), "prefix": p, "tenant": t, "vpc": v})),
        )
        .await;
    }
    let vpcs = stored(&kv, "vpcs", &format!("/{name}")).await;
    assert_eq!(vpcs[0]["ipv6_ranges"], json!(["2001:db8:100:1000::/64"]));
    let b = c
        .call(
            "POST",
            "/api/v2/vnet",
            Some(
                json!({"name": format!("{name}-N3-web"), "vpc": v, "tenant": t, "sites": site,
                "vxlanID": 1_800_001, "tags": [], "ports": [],
                "gateways": [{"prefix": "10.80.1.1/24"}, {"prefix": "2001:db8:100:1000::1"}]}),
            ),
        )
        .await;
    check("POST vnet routed dual-stack", &b, "ResAddEditBodyData");
    let n = stored(&kv, "networks", &format!("/{name}-N3-web")).await;
    assert_eq!(
        n[0]["ipv6_prefix"],
        json!("2001:db8:100:1000::/64"),
        "{n:?}"
    );
    // `ports[].ipv6` (`VnetPortEditBody`): an address of the tier's /64 is accepted, any
    // other refused naming the field (they were ignored, whatever they held).
    let web = id(&b["data"]);
    let put = |ports: Value| {
        let cookie = c.cookie.clone();
        let body = json!({"name": format!("{name}-N3-web"), "vpc": v, "tenant": t, "sites": site,
            "vxlanID": 1_800_001, "tags": [], "ports": ports,
            "gateways": [{"prefix": "10.80.1.1/24"}, {"prefix": "2001:db8:100:1000::1"}]});
        async move {
            http(
                addr,
                "PUT",
                &format!("/api/v2/vnet/{web}"),
                &cookie,
                Some(&body),
            )
            .await
        }
    };
    let a = put(json!([{"id": 7, "state": "active", "ipv4": "10.80.1.11", "ipv6": "2001:db8:100:1000::11"}])).await;
    assert_eq!(a.status, 200, "{}", a.body);
    for (port, field) in [
        (
            json!({"id": 7, "ipv6": "2001:db8:100:2000::11"}),
            "ports[0].ipv6",
        ),
        (
            json!({"id": 7, "ipv6": "2001:db8:100:1000::1"}),
            "ports[0].ipv6",
        ),
        (json!({"id": 7, "ipv6": "10.80.1.11"}), "ports[0].ipv6"),
        (json!({"id": 7, "ipv4": "10.80.2.11"}), "ports[0].ipv4"),
    ] {
        let a = put(json!([port])).await;
        assert_eq!(a.status, 400, "{port}: {}", a.body);
        let m = a.body["message"].as_str().unwrap_or_default();
        assert!(m.contains(field), "{port}: {m}");
    }
    // The zone's range goes (CloudStack deletes the subnet, then the allocation); the pool stays.
    c.call(
        "DELETE",
        &format!("/api/v2/ipam/subnet/{zone_subnet}"),
        None,
    )
    .await;
    c.call(
        "DELETE",
        &format!("/api/v2/ipam/allocation/{zone_alloc}"),
        None,
    )
    .await;
    let pools = stored(&kv, "pools", "").await;
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(pools[0]["cidr"], json!("2001:db8:100::/40"));
}

async fn stored(kv: &MemStore, kind: &str, suffix: &str) -> Vec<Value> {
    use sf_store::KvStore;
    let (kvs, _) = kv.list(&format!("/t/intent/{kind}/")).await.unwrap();
    kvs.iter()
        .filter(|e| e.key.ends_with(suffix))
        .map(|e| serde_json::from_slice(&e.value).unwrap())
        .collect()
}

/// Issue 21: a dual-stack tier created in CloudStack's shapes (IPv6 allocation, `common`
/// subnet with `globalRouting`, the vNet's second gateway) carries IPv6 into the intent: the
/// VPC's range, the tier's /64; a PUT may add the IPv6 gateway later; refusals name the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_tier_in_cloudstacks_shapes_carries_ipv6() {
    let kv = Arc::new(MemStore::new());
    let addr = serve_on(kv.clone()).await;
    let c = login(addr).await;
    let raw = |m: &'static str, p: String, b: Value| {
        let cookie = c.cookie.clone();
        async move { http(addr, m, &p, &cookie, Some(&b)).await }
    };
    let b = c.call("GET", "/api/tenants", None).await;
    let tenant = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Admin")
        .unwrap()["id"]
        .clone();
    let t = json!({"id": tenant, "name": "Admin"});
    // The zone's IPv6 range, an allocation of the System VPC: a site IPv6 pool (the ranges of
    // tenant VPCs inside it are routed).
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/allocation",
            Some(
                json!({"name": "Z1-2001:db8:70::/44", "prefix": "2001:db8:70::/44",
                "tenant": t, "vpc": {"id": 1}, "ipFamily": "ipv6"}),
            ),
        )
        .await;
    check(
        "POST ipam/allocation System IPv6",
        &b,
        "InlineResponse2004Data",
    );
    let pool6 = id(&b["data"]);
    let pools = stored(&kv, "pools", "").await;
    assert!(
        pools.iter().any(|p| p["cidr"] == "2001:db8:70::/44"),
        "{pools:?}"
    );
    let name = "D1-A2-Z1-V7-dual";
    let b = c
        .call(
            "POST",
            "/api/v2/vpc",
            Some(json!({"name": name, "adminTenant": t, "guestTenant": [], "tags": []})),
        )
        .await;
    let vpc = id(&b["data"]);
    let alloc = |n: &str, prefix: &str, family: &str| json!({"name": n, "prefix": prefix, "tenant": t, "vpc": {"id": vpc}, "ipFamily": family});
    // The IPv6 allocation may come before the VPC's IPv4 one: the VPC picks it up.
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/allocation",
            Some(alloc("a6", "fd00:70::/48", "ipv6")),
        )
        .await;
    check(
        "POST ipam/allocation IPv6 first",
        &b,
        "InlineResponse2004Data",
    );
    let a6 = id(&b["data"]);
    c.call(
        "POST",
        "/api/v2/ipam/allocation",
        Some(alloc("a4", "10.70.0.0/16", "ipv4")),
    )
    .await;
    let v = stored(&kv, "vpcs", "/D1-A2-Z1-V7-dual").await;
    assert_eq!(v[0]["ipv6_ranges"], json!(["fd00:70::/48"]), "{v:?}");
    // A second IPv6 allocation is added to the StackFabric VPC's ranges.
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/allocation",
            Some(alloc("a6b", "2001:db8:70::/48", "ipv6")),
        )
        .await;
    let a6b = id(&b["data"]);
    let v = stored(&kv, "vpcs", "/D1-A2-Z1-V7-dual").await;
    assert_eq!(
        v[0]["ipv6_ranges"],
        json!(["fd00:70::/48", "2001:db8:70::/48"])
    );
    let a = raw(
        "POST",
        "/api/v2/ipam/allocation".into(),
        alloc("bad", "fd00:71::/48", "ipv4"),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("invalid ipFamily"),
        "{}",
        a.body
    );
    // CloudStack's IPv6 `common` subnet with globalRouting, then the vNet with two gateways.
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/subnet",
            Some(
                json!({"name": format!("{name}-N1-web"), "prefix": "fd00:70:0:1::/64",
                "purpose": "common", "globalRouting": true, "ipFamily": "ipv6", "vpc": {"id": vpc},
                "tenant": t, "sites": [{"id": 1, "name": "lab"}]}),
            ),
        )
        .await;
    let sn6 = id(&b["data"]);
    let vnet = |n: &str, vni: u32, gws: &[&str]| {
        json!({"name": n, "vpc": {"id": vpc}, "tenant": t, "sites": [{"id": 1, "name": "lab"}],
            "vxlanID": vni, "tags": [],
            "gateways": gws.iter().map(|g| json!({"prefix": g})).collect::<Vec<_>>()})
    };
    let b = c
        .call(
            "POST",
            "/api/v2/vnet",
            Some(vnet(
                "web",
                1_700_001,
                &["10.70.1.1/24", "fd00:70:0:1::1/64"],
            )),
        )
        .await;
    check("POST vnet dual-stack", &b, "ResAddEditBodyData");
    let web = id(&b["data"]);
    let n = stored(&kv, "networks", "/web").await;
    assert_eq!(n[0]["ipv6_prefix"], json!("fd00:70:0:1::/64"), "{n:?}");
    // Refusals name the field.
    for (gws, want) in [
        (["10.70.2.1/24", "fd00:99:0:2::1/64"], "network.ipv6_prefix"),
        (["10.70.2.1/24", "fd00:70:0:2::5/64"], "gateways[1].prefix"),
        (["10.70.2.1/24", "fd00:70:0:1::1/64"], "network.ipv6_prefix"),
        (["10.70.2.1/24", "fd00:70:0:2::1/56"], "gateways[1].prefix"),
    ] {
        let a = raw("POST", "/api/v2/vnet".into(), vnet("db", 1_700_002, &gws)).await;
        assert_eq!(a.status, 400, "{gws:?}: {}", a.body);
        let m = a.body["message"].as_str().unwrap_or_default();
        assert!(m.contains(want), "{gws:?}: {m}");
    }
    // An IPv4-only vnet gains its IPv6 gateway by a PUT.
    let b = c
        .call(
            "POST",
            "/api/v2/vnet",
            Some(vnet("db", 1_700_002, &["10.70.2.1/24"])),
        )
        .await;
    let db = id(&b["data"]);
    assert_eq!(
        stored(&kv, "networks", "/db").await[0].get("ipv6_prefix"),
        None
    );
    c.call(
        "PUT",
        &format!("/api/v2/vnet/{db}"),
        Some(json!({"gateways": [{"prefix": "10.70.2.1/24"}, {"prefix": "2001:db8:70:2::1/64"}]})),
    )
    .await;
    assert_eq!(
        stored(&kv, "networks", "/db").await[0]["ipv6_prefix"],
        json!("2001:db8:70:2::/64")
    );
    let a = raw(
        "PUT",
        format!("/api/v2/vnet/{db}"),
        json!({"gateways": [{"prefix": "10.70.2.1/24"}, {"prefix": "2001:db8:70:3::1/64"}]}),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    // L4LB: ipFamily must match the VIP and backends, the refusal naming the field.
    let lb = |family: &str, ip: &str, backend: &str| {
        json!({"name": "lb6", "tenant": t, "site": {"id": 1}, "vpc": {"id": vpc}, "protocol": "TCP",
            "ip": ip, "port": 80, "status": "enable", "ipFamily": family,
            "backendIps": [{"ip": backend, "port": 80}]})
    };
    for (body, want) in [
        (
            lb("ipv4", "203.0.113.60", "fd00:70:0:1::11"),
            "backend[0].ip",
        ),
        (lb("IPv6", "203.0.113.60", "10.70.1.11"), "invalid ipFamily"),
        (
            lb("ipv4", "2001:db8:7f::60", "fd00:70:0:1::11"),
            "invalid ipFamily",
        ),
        (lb("ipv6", "2001:db8:7f::60", "10.70.1.11"), "backend[0].ip"),
        (
            lb("IPv7", "2001:db8:7f::60", "fd00:70:0:1::11"),
            "invalid ipFamily",
        ),
    ] {
        let a = raw("POST", "/api/v2/l4lb".into(), body).await;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(
            a.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(want),
            "{}",
            a.body
        );
    }
    // An IPv6 load balancer: a VIP of the zone's IPv6 range (the site's pool), backends in
    // the dual-stack tier, `ipFamily` as the SDK sends it; listed back with its family.
    let a = raw(
        "POST",
        "/api/v2/l4lb".into(),
        lb("IPv6", "2001:db8:7f::60", "fd00:70:0:1::11"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let lb6_id = a.body["data"].clone();
    let lbs = stored(&kv, "lbs", "").await;
    let l6 = lbs
        .iter()
        .find(|l| l["vip"] == "2001:db8:7f::60")
        .unwrap_or_else(|| panic!("no IPv6 load balancer stored: {lbs:?}"));
    assert_eq!(l6["backends"][0]["ip"], "fd00:70:0:1::11", "{l6}");
    let b = c.call("GET", "/api/v2/l4lb", None).await;
    check("GET l4lb IPv6", &b, "[L4LoadBalancerItem]");
    let listed = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ip"] == "2001:db8:7f::60")
        .unwrap_or_else(|| panic!("{b}"));
    assert_eq!(listed["ipFamily"], "IPv6", "{listed}");
    assert_eq!(listed["backendIps"][0]["ip"], "fd00:70:0:1::11", "{listed}");
    // `automatic` with ipFamily IPv6: the VIP comes from the System VPC's IPv6
    // load-balancer subnet (a /128 of the zone's range), as an IPv4 one from a /32.
    let b = c
        .call(
            "POST",
            "/api/v2/ipam/subnet",
            Some(
                json!({"name": "lb6-vip", "prefix": "2001:db8:7f::61/128", "tenant": t,
                "vpc": {"id": 1}, "purpose": "load-balancer", "ipFamily": "ipv6"}),
            ),
        )
        .await;
    check(
        "POST ipam/subnet System IPv6 LB",
        &b,
        "InlineResponse2004Data",
    );
    let mut auto = lb("IPv6", "", "fd00:70:0:1::12");
    auto["name"] = json!("lb6-auto");
    auto["automatic"] = json!(true);
    auto.as_object_mut().unwrap().remove("ip");
    let a = raw("POST", "/api/v2/l4lb".into(), auto).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let lb6_auto_id = a.body["data"].clone();
    assert!(
        stored(&kv, "lbs", "")
            .await
            .iter()
            .any(|l| l["vip"] == "2001:db8:7f::61"),
        "the automatic IPv6 VIP is the /128's address"
    );
    // IPv6 static routes: CloudStack posts the prefix (its `name`) and a next hop in a tier.
    let route = |prefix: &str, hop: &str| {
        json!({"prefix": prefix, "next_hop": hop, "description": name, "site_id": 1,
            "stateStatus": "active", "switches": [], "vpc": {"id": vpc}})
    };
    let b = c
        .call(
            "POST",
            "/api/routes",
            Some(route("fd00:99::/64", "fd00:70:0:1::11")),
        )
        .await;
    check("POST routes IPv6", &b, "InlineResponse2004Data");
    let rt = stored(&kv, "routes", "").await;
    assert_eq!(
        (&rt[0]["prefix"], &rt[0]["nexthop"]),
        (&json!("fd00:99::/64"), &json!("fd00:70:0:1::11")),
        "{rt:?}"
    );
    let b = c
        .call("GET", &format!("/api/routes?filterByVpc={vpc}"), None)
        .await;
    check("GET routes IPv6", &b, "[RoutesGetBody]");
    let listed = b["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{b}");
    assert_eq!(listed[0]["name"], "fd00:99::/64");
    assert_eq!(listed[0]["next_hop"], "fd00:70:0:1::11");
    for (body, want) in [
        (route("fd00:98::/64", "10.70.1.11"), "route.nexthop"),
        (route("fd00:98::/64", "fd00:70:0:5::11"), "route.nexthop"),
        (route("fd00:98::1/64", "fd00:70:0:1::11"), "host bits"),
    ] {
        let a = raw("POST", "/api/routes".into(), body).await;
        assert_eq!(a.status, 400, "{}", a.body);
        let m = a.body["message"].as_str().unwrap_or_default();
        assert!(m.contains(want), "{want}: {m}");
    }
    c.call(
        "DELETE",
        "/api/routes",
        Some(json!({"id": listed[0]["id"]})),
    )
    .await;
    assert!(stored(&kv, "routes", "").await.is_empty());
    // A range in use stays: a tier's /64 in it blocks the allocation's removal (its IPv6
    // subnet does not: CloudStack deletes a VPC's allocations before its subnets).
    let a = raw("DELETE", format!("/api/v2/ipam/allocation/{a6}"), json!({})).await;
    assert_eq!(a.status, 409, "{}", a.body);
    let a = raw(
        "DELETE",
        format!("/api/v2/ipam/allocation/{a6b}"),
        json!({}),
    )
    .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("vpc.ipv6_ranges"),
        "{}",
        a.body
    );
    // The zone's IPv6 pool routes a6b's range: it stays while the range does.
    let a = raw(
        "DELETE",
        format!("/api/v2/ipam/allocation/{pool6}"),
        json!({}),
    )
    .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2001:db8:70::/48"),
        "{}",
        a.body
    );
    // CloudStack's teardown: load balancers, vnets, subnet, then the allocations; the
    // ranges go with them. (A tier holding an IPv6 backend cannot go before its LB.)
    for id in [&lb6_id, &lb6_auto_id] {
        c.call("DELETE", &format!("/api/v2/l4lb/{id}"), None).await;
    }
    assert!(stored(&kv, "lbs", "").await.is_empty());
    for path in [
        format!("/api/v2/vnet/{web}"),
        format!("/api/v2/vnet/{db}"),
        format!("/api/v2/ipam/subnet/{sn6}"),
        format!("/api/v2/ipam/allocation/{a6b}"),
    ] {
        c.call("DELETE", &path, None).await;
    }
    let v = stored(&kv, "vpcs", "/D1-A2-Z1-V7-dual").await;
    assert_eq!(v[0]["ipv6_ranges"], json!(["fd00:70::/48"]), "{v:?}");
    // With the routed range gone, the zone's IPv6 range (the pool) may go.
    c.call("DELETE", &format!("/api/v2/ipam/allocation/{pool6}"), None)
        .await;
    let pools = stored(&kv, "pools", "").await;
    assert!(
        !pools.iter().any(|p| p["cidr"] == "2001:db8:70::/44"),
        "{pools:?}"
    );
    c.call("DELETE", &format!("/api/v2/ipam/allocation/{a6}"), None)
        .await;
    let v = stored(&kv, "vpcs", "/D1-A2-Z1-V7-dual").await;
    assert_eq!(v[0].get("ipv6_ranges"), None, "{v:?}");
}

/// Issue 21: IPv6 ACL records in CloudStack's shape (`NetrisServiceImpl.addFirewallRules`: an
/// IPv6 rule's `dst_prefix` on ingress, `src_prefix` on egress, is the tier's /64) become rules
/// of the tier's derived list with IPv6 CIDRs, listed back as sent; a record mixing families is
/// refused naming the field; an IPv6 LB's source ACLs ("<v6 VIP>/32", CloudStack's quirk) are
/// the VIP's source list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_acls_in_cloudstacks_shape_become_the_tiers_ipv6_rules() {
    let kv = Arc::new(MemStore::new());
    let addr = serve_on(kv.clone()).await;
    let c = login(addr).await;
    let raw = |m: &'static str, p: &'static str, b: Value| {
        let cookie = c.cookie.clone();
        async move { http(addr, m, p, &cookie, Some(&b)).await }
    };
    let b = c.call("GET", "/api/tenants", None).await;
    let tenant = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Admin")
        .unwrap()["id"]
        .clone();
    let t = json!({"id": tenant, "name": "Admin"});
    let sys = json!({"id": 1});
    c.call(
        "POST",
        "/api/v2/ipam/allocation",
        Some(
            json!({"name": "Z1-2001:db8:70::/44", "prefix": "2001:db8:70::/44",
            "tenant": t, "vpc": sys, "ipFamily": "ipv6"}),
        ),
    )
    .await;
    let vname = "D1-A2-Z1-V7-dual";
    let b = c
        .call(
            "POST",
            "/api/v2/vpc",
            Some(json!({"name": vname, "adminTenant": t, "guestTenant": [], "tags": []})),
        )
        .await;
    let vpc = id(&b["data"]);
    for (prefix, family) in [("10.70.0.0/16", "ipv4"), ("2001:db8:70::/48", "ipv6")] {
        c.call(
            "POST",
            "/api/v2/ipam/allocation",
            Some(
                json!({"name": format!("{vname}-{prefix}"), "prefix": prefix, "tenant": t, "vpc": {"id": vpc},
                "ipFamily": family}),
            ),
        )
        .await;
    }
    let b = c
        .call(
            "POST",
            "/api/v2/vnet",
            Some(
                json!({"name": format!("{vname}-N9-web"), "vpc": {"id": vpc}, "tenant": t,
                "sites": [{"id": 1, "name": "lab"}], "vxlanID": 1_700_001, "tags": [],
                "gateways": [{"prefix": "10.70.1.1/24"}, {"prefix": "2001:db8:70:1::1/64"}]}),
            ),
        )
        .await;
    let web = id(&b["data"]);
    // `AclAddItem` as CloudStack fills it for one source CIDR of a rule.
    let acl = |rule: u32, action: &str, proto: &str, src: &str, dst: &str, port: u16| {
        json!({"name": format!("{vname}-N9-ACL{rule}"), "action": action, "proto": proto,
            "established": if proto == "tcp" { 1 } else { 0 },
            "reverse": if proto == "tcp" { "no" } else { "yes" },
            "src_prefix": src, "src_port_from": 1, "src_port_to": 65535,
            "dst_prefix": dst, "dst_port_from": port, "dst_port_to": port,
            "vpc": {"id": vpc}, "comment": ""})
    };
    let list_key = format!("/cs-acl-{web}");
    let rules = || async {
        let l = stored(&kv, "acls", &list_key).await;
        assert_eq!(l.len(), 1, "one derived list: {l:?}");
        l[0]["rules"].as_array().unwrap().clone()
    };
    // Ingress: `::/0` -> the tier's /64, TCP 80; then CloudStack's deny-all of the tier.
    let b = c
        .call(
            "POST",
            "/api/acl",
            Some(acl(1, "permit", "tcp", "::/0", "2001:db8:70:1::/64", 80)),
        )
        .await;
    assert!(b["id"].is_u64(), "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("ingress rule of tier \"D1-A2-Z1-V7-dual-N9-web\""),
        "{b}"
    );
    let permit = b["id"].clone();
    c.call(
        "POST",
        "/api/acl",
        Some(acl(2, "deny", "ip", "::/0", "2001:db8:70:1::/64", 65535)),
    )
    .await;
    // Egress: the mirror (`src_prefix` the tier's /64).
    c.call(
        "POST",
        "/api/acl",
        Some(acl(
            3,
            "deny",
            "udp",
            "2001:db8:70:1::/64",
            "2001:db8:ffff::/48",
            53,
        )),
    )
    .await;
    let r = rules().await;
    let got: Vec<_> = r
        .iter()
        .map(|r| {
            (
                r["number"].clone(),
                r["direction"].clone(),
                r["action"].clone(),
                r["protocol"].clone(),
                r.get("ports").cloned(),
                r["cidrs"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                json!(1),
                json!("ingress"),
                json!("allow"),
                json!("tcp"),
                Some(json!([80, 80])),
                json!(["::/0"])
            ),
            (
                json!(2),
                json!("ingress"),
                json!("deny"),
                json!("all"),
                None,
                json!(["::/0"])
            ),
            (
                json!(3),
                json!("egress"),
                json!("deny"),
                json!("udp"),
                Some(json!([53, 53])),
                json!(["2001:db8:ffff::/48"])
            ),
        ],
        "{r:#?}"
    );
    // Listed back as sent, as IPv6.
    let b = c.call("GET", "/api/acl", None).await;
    check("GET acl IPv6", &b, "[AclGetBody]");
    let listed = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == permit)
        .unwrap_or_else(|| panic!("{b}"))
        .clone();
    assert_eq!(
        (
            &listed["src_prefix"],
            &listed["dst_prefix"],
            &listed["ip_version"]
        ),
        (&json!("::/0"), &json!("2001:db8:70:1::/64"), &json!("ipv6")),
        "{listed}"
    );
    assert_eq!(listed["dst_port_from"], 80, "{listed}");
    // `AclEditItem`: the same record on port 8080.
    let mut edit = acl(1, "permit", "tcp", "::/0", "2001:db8:70:1::/64", 8080);
    edit["id"] = permit.clone();
    c.call("PUT", "/api/acl", Some(edit)).await;
    assert_eq!(rules().await[0]["ports"], json!([8080, 8080]));
    // Families mixed in one record: refused naming the field; nothing stored.
    for (src, dst) in [
        ("0.0.0.0/0", "2001:db8:70:1::/64"),
        ("2001:db8:70:1::/64", "10.70.1.0/24"),
    ] {
        let a = raw("POST", "/api/acl", acl(4, "permit", "tcp", src, dst, 22)).await;
        assert_eq!(a.status, 400, "{}", a.body);
        let m = a.body["message"].as_str().unwrap_or_default();
        assert!(
            m.contains("invalid dst_prefix") && m.contains("src_prefix"),
            "{m}"
        );
    }
    let a = raw(
        "POST",
        "/api/acl",
        acl(4, "permit", "tcp", "::/0", "2001:db8:70:1::/zz", 22),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(rules().await.len(), 3);
    // An IPv4 record of the same tier lands in the same list, after the IPv6 ones.
    c.call(
        "POST",
        "/api/acl",
        Some(acl(5, "permit", "tcp", "0.0.0.0/0", "10.70.1.0/24", 22)),
    )
    .await;
    let r = rules().await;
    assert_eq!(
        (r.len(), &r[3]["cidrs"]),
        (4, &json!(["0.0.0.0/0"])),
        "{r:#?}"
    );

    // An IPv6 LB limited to source CIDRs: CloudStack's LB ACLs carry "<VIP>/32" even for an
    // IPv6 VIP; read as the VIP's /128, they are its source list.
    c.call(
        "POST",
        "/api/v2/l4lb",
        Some(
            json!({"name": format!("{vname}-LB7"), "tenant": t, "site": {"id": 1},
            "vpc": {"id": vpc}, "protocol": "TCP", "ip": "2001:db8:7f::60", "port": 80,
            "status": "enable", "ipFamily": "IPv6", "automatic": false, "healthCheck": "None",
            "backendIps": [{"ip": "2001:db8:70:1::11", "port": 80}]}),
        ),
    )
    .await;
    let lb_acl = |n: u32, action: &str, src: &str| {
        json!({"name": format!("{vname}-LBACL{n}-7"), "action": action, "proto": "tcp",
            "src_prefix": src, "src_port_from": 1, "src_port_to": 65535,
            "dst_prefix": "2001:db8:7f::60/32", "dst_port_from": 80, "dst_port_to": 80,
            "vpc": sys, "comment": "", "established": 0})
    };
    let sources = || async {
        let l = stored(&kv, "lbs", "").await;
        l[0].get("source_cidrs").cloned().unwrap_or(json!([]))
    };
    let b = c
        .call("POST", "/api/acl", Some(lb_acl(0, "deny", "::/0")))
        .await;
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("source rule of load balancer"),
        "{b}"
    );
    assert_eq!(sources().await, json!(["::/128"]));
    c.call(
        "POST",
        "/api/acl",
        Some(lb_acl(1, "permit", "2001:db8:ffff::/48")),
    )
    .await;
    assert_eq!(sources().await, json!(["2001:db8:ffff::/48"]));
    let b = c.call("GET", "/api/acl", None).await;
    let listed: Vec<&Value> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"].as_str().unwrap().contains("LBACL"))
        .collect();
    assert!(
        listed
            .iter()
            .all(|a| a["dst_prefix"] == "2001:db8:7f::60/128"),
        "{listed:?}"
    );

    // CloudStack's `AclDeleteItem`: every record goes; the tier's list and the LB's sources
    // with them.
    let ids: Vec<Value> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    c.call(
        "DELETE",
        "/api/acl",
        Some(json!({"id": ids, "tenantsID": tenant.to_string()})),
    )
    .await;
    assert!(stored(&kv, "acls", "").await.is_empty());
    assert_eq!(sources().await, json!([]));
    assert!(c.call("GET", "/api/acl", None).await["data"]
        .as_array()
        .unwrap()
        .is_empty());
}
