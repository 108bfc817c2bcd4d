//! HTTP handlers: session, lookups, and one generic create / update / delete / list per kind
//! of Netris object (see the module doc of [`super`] for the mapping).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{json, Value};
use sf_core::event::{VpcChildRef, VpcRef};
use sf_core::model::{Intent, Pool, Tenant, Vpc};
use sf_core::validate::overlaps;

use super::acl_map;
use super::auth::{self, COOKIE};
use super::limits;
use super::meta::*;
use super::wire::*;
use super::Rest;

type St = State<Arc<Rest>>;
/// Query parameters in order; `filterByVpc`/`filterBySites` come repeated from the SDK.
type Q = Query<Vec<(String, String)>>;
type Params = [(String, String)];

/// The first non-empty value of a query parameter.
fn qget<'a>(q: &'a Params, key: &str) -> Option<&'a String> {
    q.iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v)
}

/// Every value of a repeated parameter (also comma-separated lists); `None` when absent.
fn qall(q: &Params, key: &str) -> Option<Vec<String>> {
    let all: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == key || k.strip_suffix("[]") == Some(key))
        .flat_map(|(_, v)| v.split(',').map(|x| x.trim().to_string()))
        .filter(|v| !v.is_empty())
        .collect();
    (!all.is_empty()).then_some(all)
}
type Res = Result<Response, ApiError>;

pub fn router(state: Arc<Rest>) -> Router {
    use axum::routing::{delete, post, put};
    let protected = Router::new()
        .route("/api/sites", get(sites))
        .route("/api/tenants", get(tenants))
        .route("/api/v2/vpc", get(list_vpcs).post(post_vpc))
        .route(
            "/api/v2/vpc/{id}",
            get(get_vpc).put(put_vpc).delete(delete_vpc),
        )
        .route("/api/v2/vpc/{id}/resources", get(vpc_resources))
        .route("/api/v2/ipam", get(ipam_tree))
        .route("/api/v2/ipam/subnets", get(list_subnets))
        .route("/api/v2/ipam/allocations", get(list_allocations))
        .route("/api/v2/ipam/allocation", post(post_allocation))
        .route(
            "/api/v2/ipam/allocation/{id}",
            put(put_allocation).delete(delete_allocation),
        )
        .route("/api/v2/ipam/subnet", post(post_subnet))
        .route(
            "/api/v2/ipam/subnet/{id}",
            put(put_subnet).delete(delete_subnet),
        )
        .route("/api/v2/vnet", get(list_vnets).post(post_vnet))
        .route(
            "/api/v2/vnet/{id}",
            get(get_vnet).put(put_vnet).delete(delete_vnet),
        )
        .route("/api/v2/nat", get(list_nats).post(post_nat))
        .route(
            "/api/v2/nat/{id}",
            get(get_nat).put(put_nat).delete(delete_nat),
        )
        .route("/api/v2/l4lb", get(list_lbs).post(post_lb))
        .route(
            "/api/v2/l4lb/{id}",
            get(get_lb).put(put_lb).delete(delete_lb),
        )
        .route(
            "/api/acl",
            get(list_acls)
                .post(post_acl)
                .put(put_acl_v1)
                .delete(delete_acl_v1),
        )
        .route("/api/acl/{id}", delete(delete_acl_path))
        .route(
            "/api/routes",
            get(list_routes)
                .post(post_route)
                .put(put_route_v1)
                .delete(delete_route_v1),
        )
        .route("/api/routes/{id}", delete(delete_route_path))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/api/auth", get(auth_check).post(login).delete(logout))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        // limit_body enforces the limit with a 413 envelope; the extractor's own limit (a
        // plain-text 413) is set to match so it can never be the one that answers.
        .layer(axum::extract::DefaultBodyLimit::max(limits::BODY_LIMIT))
        .layer(middleware::from_fn(limits::limit_body))
        .layer(middleware::from_fn(limits::envelope_errors))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// session

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| auth::cookie_value(h, COOKIE).map(str::to_string))
}

async fn require_session(State(s): St, req: Request, next: Next) -> Response {
    let user = match session_token(req.headers()) {
        Some(t) => s.sessions.check(&t).await,
        None => None,
    };
    match user {
        Some(_) => next.run(req).await,
        None => ApiError::unauthorized().into_response(),
    }
}

async fn auth_check(State(s): St, headers: HeaderMap) -> Res {
    let user = match session_token(&headers) {
        Some(t) => s.sessions.check(&t).await,
        None => None,
    }
    .ok_or_else(ApiError::unauthorized)?;
    Ok(ok("session is valid", json!({"user": user})))
}

async fn login(
    State(s): St,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    // Budget first: a refused attempt costs no parsing and no argon2.
    let client = peer.map(|p| p.0 .0.ip());
    s.login_guard
        .admit(client)
        .map_err(IntoResponse::into_response)?;
    let (user, password) = credentials(&headers, &body).map_err(IntoResponse::into_response)?;
    // Bounded: at most half the cores verify passwords, the API keeps the rest. The slot
    // moves into the blocking task so a client that hangs up does not free it early.
    let slot = s
        .login_guard
        .verify_slot()
        .await
        .map_err(IntoResponse::into_response)?;
    let (st, u) = (s.clone(), user.clone());
    let good = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        st.users.verify(&u, &password)
    })
    .await
    .unwrap_or(false);
    if !good {
        tracing::warn!(user = %user, client = ?client, "REST login failed");
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "invalid user or password",
        )
        .into_response());
    }
    let token = s
        .sessions
        .create(&user)
        .await
        .map_err(|e| ApiError::unavailable(format!("etcd unavailable: {e}")).into_response())?;
    let mut resp = ok("Login successful", json!({"user": user}));
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("ascii cookie"),
    );
    Ok(resp)
}

/// User and password of a login body (JSON or form).
fn credentials(headers: &HeaderMap, body: &[u8]) -> ApiResult<(String, String)> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"))
        || body.first() == Some(&b'{');
    let (user, password) = if is_json {
        let v = parse_body(body)?;
        (
            opt_str(&v, "user")
                .or_else(|| opt_str(&v, "login"))
                .or_else(|| opt_str(&v, "username")),
            opt_str(&v, "password"),
        )
    } else {
        let f = auth::parse_form(&String::from_utf8_lossy(body));
        (
            f.get("user")
                .or_else(|| f.get("login"))
                .or_else(|| f.get("username"))
                .cloned(),
            f.get("password").cloned(),
        )
    };
    let (Some(user), Some(password)) = (user.filter(|u| !u.is_empty()), password) else {
        return Err(ApiError::bad("invalid user/password: both are required"));
    };
    Ok((user, password))
}

async fn logout(State(s): St, headers: HeaderMap) -> Res {
    if let Some(t) = session_token(&headers) {
        s.sessions.remove(&t).await;
    }
    Ok(ok("logged out", Value::Null))
}

// ---------------------------------------------------------------------------------------------
// shared helpers

impl Rest {
    /// The REST metadata, from the coordinator's index (which follows a watch on the whole
    /// root, REST metadata included): no etcd read per request. This replica's own writes
    /// wait for the index ([`Rest::commit`]), so they are always seen; a view behind another
    /// replica's write can only make a write fail (its transaction compares the records' and
    /// the id counter's revisions, and the intent version), never corrupt.
    async fn db(&self) -> ApiResult<Arc<Db>> {
        if !self.fabric.wait_loaded().await {
            return Err(ApiError::unavailable(
                "etcd unavailable: the coordinator has not loaded its index yet",
            ));
        }
        Ok(self.fabric.rest_db())
    }

    fn intent<T>(&self, f: impl FnOnce(&Intent) -> T) -> T {
        self.fabric.with_view(|v, _| f(&v.intent))
    }

    /// Commits a transaction and waits until the index reflects it.
    async fn commit(&self, txn: Txn<'_>) -> ApiResult<i64> {
        let (compares, ops) = txn.finish();
        if ops.is_empty() {
            return Ok(0);
        }
        let out = self.fabric.store().fenced_txn(compares, ops).await?;
        if !out.succeeded {
            return Err(ApiError::conflict(
                "the objects changed concurrently (another coordinator?); retry",
            ));
        }
        self.fabric.wait_for_revision(out.revision).await;
        Ok(out.revision)
    }

    fn site_json(&self) -> Value {
        json!({"id": SITE_ID, "name": self.site})
    }

    fn tenant_json(&self, db: &Db, name: &str) -> Value {
        ref_json(db.tenant_id(name), name)
    }

    fn vpc_json(&self, db: &Db, id: u64) -> Value {
        json!({"id": id, "name": db.vpc_name(id), "isSystem": id == SYSTEM_VPC_ID,
               "isDefault": id == SYSTEM_VPC_ID})
    }

    /// Resolves `vpc` (object, id or name) to a Netris VPC id; absent means the System VPC
    /// when `default_system`, else it is required.
    fn resolve_vpc(&self, db: &Db, v: &Value, default_system: bool) -> ApiResult<u64> {
        let r = get_ref(v, "vpc").or_else(|| get_ref(v, "vpcID").or_else(|| get_ref(v, "vpc_id")));
        let Some(r) = r else {
            return if default_system {
                Ok(SYSTEM_VPC_ID)
            } else {
                Err(ApiError::bad("invalid vpc: required"))
            };
        };
        if let Some(id) = r.id {
            if id == SYSTEM_VPC_ID || db.get(Kind::Vpc, id).is_some() {
                return Ok(id);
            }
            return Err(ApiError::not_found(format!(
                "invalid vpc: VPC id {id} does not exist"
            )));
        }
        let name = r.name.unwrap_or_default();
        if name == SYSTEM_VPC_NAME {
            return Ok(SYSTEM_VPC_ID);
        }
        db.of(Kind::Vpc)
            .find(|x| x.name == name)
            .map(|x| x.id)
            .ok_or_else(|| ApiError::not_found(format!("invalid vpc: VPC {name:?} does not exist")))
    }

    /// The tenant owning objects of a Netris VPC.
    fn vpc_tenant(&self, db: &Db, vpc: u64) -> String {
        db.get(Kind::Vpc, vpc)
            .map(|r| r.tenant.clone())
            .unwrap_or_else(|| self.admin_tenant.clone())
    }

    /// A tenant reference (`adminTenant` or `tenant`), default the admin tenant; it must exist
    /// in StackFabric.
    fn resolve_tenant(&self, db: &Db, v: &Value) -> ApiResult<String> {
        let name = match get_ref(v, "adminTenant").or_else(|| get_ref(v, "tenant")) {
            None => self.admin_tenant.clone(),
            Some(IdRef { id: Some(id), .. }) => db.tenants.get(&id).cloned().ok_or_else(|| {
                ApiError::not_found(format!("invalid tenant: id {id} does not exist"))
            })?,
            Some(IdRef { name, .. }) => name.unwrap_or_default(),
        };
        if !self.intent(|i| i.tenants.contains_key(&name)) {
            return Err(ApiError::not_found(format!(
                "invalid tenant: tenant {name:?} does not exist (list /api/tenants first)"
            )));
        }
        Ok(name)
    }

    /// The StackFabric VPC of a tenant VPC, which exists once its allocation was posted.
    fn require_sf_vpc(&self, db: &Db, vpc: u64) -> ApiResult<(String, String)> {
        if vpc == SYSTEM_VPC_ID {
            return Err(ApiError::bad(
                "invalid vpc: this object needs a tenant VPC, not the System VPC",
            ));
        }
        db.sf_vpc(vpc).ok_or_else(|| {
            ApiError::conflict(format!(
                "invalid vpc: VPC {:?} has no IPAM allocation yet (its CIDR); post one first",
                db.vpc_name(vpc)
            ))
        })
    }

    /// Whether the admin tenant exists in StackFabric and every tenant has a Netris id.
    fn tenants_complete(&self, db: &Db) -> bool {
        self.intent(|i| {
            i.tenants.contains_key(&self.admin_tenant)
                && i.tenants
                    .keys()
                    .all(|n| db.tenants.values().any(|x| x == n))
        })
    }

    /// Makes sure the admin tenant exists in StackFabric and every tenant has a Netris id.
    async fn ensure_tenants(&self) -> ApiResult<()> {
        let db = self.db().await?;
        let names: Vec<String> = self.intent(|i| i.tenants.keys().cloned().collect());
        let mut txn = Txn::new(&self.keys, self.fabric.store().keys(), &db);
        let mut dirty = false;
        if !names.contains(&self.admin_tenant) {
            txn.create_sf_tenant(&Tenant {
                name: self.admin_tenant.clone(),
                description: "CloudStack (Netris API) admin tenant".into(),
            });
            dirty = true;
        }
        for n in names.iter().chain(std::iter::once(&self.admin_tenant)) {
            if !db.tenants.values().any(|x| x == n) {
                let id = txn.alloc_id();
                txn.put_tenant(id, n);
                dirty = true;
            }
        }
        if dirty {
            self.commit(txn).await?;
        }
        Ok(())
    }
}

fn id_of(p: &str) -> ApiResult<u64> {
    p.parse()
        .map_err(|_| ApiError::bad(format!("invalid id: {p:?} is not a number")))
}

// ---------------------------------------------------------------------------------------------
// rendering

fn render(s: &Rest, db: &Db, intent: &Intent, r: &Record) -> Value {
    let tenant = s.tenant_json(db, &r.tenant);
    let vpc = s.vpc_json(db, r.vpc);
    let site = s.site_json();
    match &r.spec {
        // `VPCListing`.
        Spec::Vpc => json!({
            "id": r.id, "name": r.name, "isSystem": false, "isDefault": false,
            "adminTenant": tenant, "guestTenant": [], "tags": [], "vlans": [],
        }),
        Spec::Allocation(a) => json!({
            "id": r.id, "name": r.name, "prefix": a.prefix.to_string(), "type": "allocation",
            "tenant": tenant, "vpc": vpc, "tags": [], "ipFamily": "ipv4", "readonly": "no",
            "children": db.of(Kind::Subnet)
                .filter(|x| x.vpc == r.vpc && matches!(&x.spec, Spec::Subnet(sn) if a.prefix.contains(&sn.prefix)))
                .map(|x| render(s, db, intent, x)).collect::<Vec<_>>(),
        }),
        // `IpTreeSubnet`: `allocationID` is the enclosing allocation of the same VPC.
        Spec::Ip6(p) => {
            let alloc = (!p.allocation)
                .then(|| {
                    db.of(Kind::Allocation)
                        .filter(|x| x.vpc == r.vpc)
                        .filter_map(|x| match &x.spec {
                            Spec::Ip6(a) if a.allocation && a.prefix.contains(&p.prefix) => {
                                Some((a.prefix.prefix_len(), x.id))
                            }
                            _ => None,
                        })
                        .max()
                        .map(|(_, id)| id)
                })
                .flatten();
            let t = if p.allocation { "allocation" } else { "subnet" };
            let mut o = json!({
                "id": r.id, "name": r.name, "prefix": p.prefix.to_string(), "type": t,
                "tenant": tenant, "vpc": vpc, "tags": [], "ipFamily": "ipv6", "readonly": "no",
                "children": [],
            });
            if !p.allocation {
                o["purpose"] = json!(p.purpose);
                o["defaultGateway"] = json!(p.default_gateway);
                o["globalRouting"] = json!(p.global_routing);
                o["allocationID"] = json!(alloc);
                o["parentID"] = json!(alloc);
                o["sites"] = json!([site]);
            }
            o
        }
        Spec::Subnet(sn) => {
            let alloc = db
                .of(Kind::Allocation)
                .filter(|x| x.vpc == r.vpc)
                .filter_map(|x| match &x.spec {
                    Spec::Allocation(a) if a.prefix.contains(&sn.prefix) => {
                        Some((a.prefix.prefix_len(), x.id))
                    }
                    _ => None,
                })
                .max()
                .map(|(_, id)| id);
            json!({
                "id": r.id, "name": r.name, "prefix": sn.prefix.to_string(), "type": "subnet",
                "purpose": sn.purpose, "defaultGateway": sn.default_gateway, "tenant": tenant,
                "vpc": vpc, "sites": [site], "tags": [], "allocationID": alloc,
                "parentID": alloc, "ipFamily": "ipv4", "readonly": "no", "globalRouting": false,
                "children": [],
            })
        }
        Spec::Vnet(v) => {
            let vni = match &r.sf {
                Some(SfRef::Network { tenant, vpc, name }) => intent
                    .networks
                    .get(&VpcChildRef::new(tenant, vpc, name))
                    .map(|n| n.vni)
                    .unwrap_or(v.vni),
                _ => v.vni,
            };
            json!({
                "id": r.id, "name": r.name, "vxlanID": vni, "vpc": vpc, "tenant": tenant,
                "sites": [site], "state": v.state, "provisioning": true, "vlan": 0,
                "guestTenants": [],
                "vlanAware": false, "l3vpn": false, "tags": v.tags,
                "gateways": std::iter::once(v.gateway.to_string())
                    .chain(v.more_gateways.iter().cloned())
                    .map(|p| json!({"prefix": p, "dhcpEnabled": false}))
                    .collect::<Vec<_>>(),
            })
        }
        // `NatGetBody`: `action`, `protocol`, `state` are objects, `dnatToPort` an integer.
        Spec::Nat(n) => json!({
            "id": r.id, "name": r.name, "action": nat_action_json(&n.action),
            "protocol": nat_protocol_json(&n.protocol), "state": nat_state_json(&n.state),
            "sourceAddress": n.source_address, "sourcePort": n.source_port,
            "destinationAddress": n.destination_address, "destinationPort": n.destination_port,
            "snatToIP": n.snat_to_ip, "dnatToIP": n.dnat_to_ip,
            "dnatToPort": n.dnat_to_port.split('-').next().and_then(|p| p.trim().parse::<u16>().ok()),
            "comment": n.comment, "site": site, "vpc": {"id": r.vpc, "name": db.vpc_name(r.vpc)},
        }),
        // `L4LoadBalancerItem`.
        Spec::L4lb(l) => json!({
            "id": r.id, "name": r.name, "protocol": l.protocol, "ip": l.ip, "port": l.port,
            // As the SDK spells the family (`L4lbAddOrUpdateItem.IpFamilyEnum`).
            "ipFamily": if l.ip.contains(':') { "IPv6" } else { "ipv4" },
            "status": l.status, "internal": 0, "tenantId": db.tenant_id(&r.tenant),
            "tenantName": r.tenant, "siteId": SITE_ID, "siteName": s.site,
            "healthcheck": match l.health_check.to_ascii_uppercase().as_str() {
                "TCP" => json!({"protocol": "TCP", "timeout": 2000}),
                "HTTP" => json!({"protocol": "HTTP", "timeout": 2000, "requestPath": "/"}),
                _ => Value::Null,
            },
            "backendIps": l.backends.iter().enumerate().map(|(i, (ip, port))| json!({
                "id": i + 1, "ip": ip.to_string(), "port": port, "status": "ok",
                "maintenance": false})).collect::<Vec<_>>(),
        }),
        // The v1 shape of Netris's own SDK (`acl.ACL`: snake_case, numbers as numbers,
        // `tenantsID` a string), plus what CloudStack posted (`proto`, `vpc`).
        Spec::Acl(a) => json!({
            "id": r.id, "name": r.name, "action": a.action, "proto": a.proto,
            "protocol": a.proto, "established": a.established as u8,
            "src_prefix": a.src_prefix.to_string(), "source": a.src_prefix.to_string(),
            "src_length": a.src_prefix.prefix_len(),
            "src_port_from": a.src_port_from, "src_port_to": a.src_port_to,
            "dst_prefix": a.dst_prefix.to_string(), "destination": a.dst_prefix.to_string(),
            "dst_length": a.dst_prefix.prefix_len(), "dst_port_from": a.dst_port_from,
            "dst_port_to": a.dst_port_to, "comment": a.comment, "vpc": vpc,
            "ip_version": if a.dst_prefix.addr().is_ipv4() { "ipv4" } else { "ipv6" },
            "status": "enabled", "reverse": "no", "sites": [SITE_ID],
            "tenant_id": db.tenant_id(&r.tenant), "tenantsID": db.tenant_id(&r.tenant).to_string(),
            "tenants": r.tenant,
        }),
        Spec::Route(rt) => json!({
            // `RoutesGetBody`: CloudStack takes `name` for the prefix.
            "id": r.id, "prefix": rt.prefix.to_string(), "next_hop": rt.next_hop.to_string(),
            "description": rt.description, "name": rt.prefix.to_string(),
            "prefix_length": rt.prefix.prefix_len(), "site_id": SITE_ID,
            "stateStatus": rt.state_status, "switches": [], "vpc": vpc,
        }),
    }
}

fn system_vpc(s: &Rest, db: &Db) -> Value {
    json!({"id": SYSTEM_VPC_ID, "name": SYSTEM_VPC_NAME, "isSystem": true, "isDefault": true,
           "adminTenant": s.tenant_json(db, &s.admin_tenant), "guestTenant": [], "tags": [],
           "vlans": []})
}

/// `NatBodyActionAction`.
fn nat_action_json(a: &str) -> Value {
    let v = a.to_ascii_uppercase();
    let label = if v == "ACCEPT_SNAT" { "ACCEPT" } else { &v };
    json!({"label": label, "value": v})
}

/// `NatBodyProtocolProtocol`.
fn nat_protocol_json(p: &str) -> Value {
    json!({"label": p.to_ascii_uppercase(), "value": p.to_ascii_lowercase()})
}

/// `NatBodyStateState`.
fn nat_state_json(st: &str) -> Value {
    if st.eq_ignore_ascii_case("disabled") {
        json!({"label": "Disabled", "value": "disabled", "status": "danger"})
    } else {
        json!({"label": "Enabled", "value": "enabled", "status": "success"})
    }
}

/// Whether a record passes the `vpc` and `site` filters.
fn matches_filter(db: &Db, r: &Record, q: &Params) -> bool {
    if let Some(ids) = qall(q, "filterByVpc") {
        if !ids.iter().any(|v| v.parse::<u64>() == Ok(r.vpc)) {
            return false;
        }
    }
    if let Some(v) = qget(q, "vpc") {
        let ok = match v.parse::<u64>() {
            Ok(id) => r.vpc == id,
            Err(_) => db.vpc_name(r.vpc) == *v,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn site_matches(s: &Rest, q: &Params) -> bool {
    if let Some(ids) = qall(q, "filterBySites") {
        if !ids
            .iter()
            .any(|v| v.parse::<u64>() == Ok(SITE_ID) || *v == s.site)
        {
            return false;
        }
    }
    match qget(q, "site").or_else(|| qget(q, "siteID")) {
        None => true,
        Some(v) => v
            .parse::<u64>()
            .map(|id| id == SITE_ID)
            .unwrap_or(*v == s.site),
    }
}

/// An unfiltered list's answer from the cache while the index revision is unchanged.
fn cached_list(s: &Rest, key: &'static str, rev: i64) -> Option<Response> {
    let c = s.list_cache.lock().unwrap();
    let (r, body) = c.get(key)?;
    (rev > 0 && *r == rev).then(|| json_body(body.clone()))
}

/// Renders a list answer once to bytes; unfiltered ones are kept for [`cached_list`].
fn list_answer(s: &Rest, key: Option<&'static str>, rev: i64, items: Vec<Value>) -> Response {
    let body = Bytes::from(
        serde_json::to_vec(&json!({"isSuccess": true, "message": "", "data": items}))
            .unwrap_or_default(),
    );
    if let Some(key) = key.filter(|_| rev > 0) {
        let mut c = s.list_cache.lock().unwrap();
        if c.get(key).is_none_or(|(r, _)| *r < rev) {
            c.insert(key, (rev, body.clone()));
        }
    }
    json_body(body)
}

fn json_body(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn list_kind(s: &Rest, kind: Kind, q: &Params) -> Res {
    let rev = s.fabric.revision();
    let key = q.is_empty().then_some(kind.seg());
    if let Some(r) = key.and_then(|k| cached_list(s, k, rev)) {
        return Ok(r);
    }
    let db = s.db().await?;
    let items: Vec<Value> = if site_matches(s, q) {
        s.intent(|i| {
            db.of(kind)
                .filter(|r| matches_filter(&db, r, q))
                .map(|r| render(s, &db, i, r))
                .collect()
        })
    } else {
        vec![]
    };
    Ok(list_answer(s, key, rev, items))
}

async fn get_kind(s: &Rest, kind: Kind, id: &str) -> Res {
    let id = id_of(id)?;
    let db = s.db().await?;
    let r = db.get(kind, id).ok_or_else(|| not_found(kind, id))?;
    Ok(ok("", s.intent(|i| render(s, &db, i, r))))
}

fn not_found(kind: Kind, id: u64) -> ApiError {
    ApiError::not_found(format!("{} {id} does not exist", kind.what()))
}

// ---------------------------------------------------------------------------------------------
// building records and StackFabric objects

/// The outcome of planning a create or update.
struct Plan {
    rec: Record,
    add: Option<SfObj>,
}

fn parse_spec(kind: Kind, v: &Value) -> ApiResult<Spec> {
    Ok(match kind {
        Kind::Vpc => Spec::Vpc,
        Kind::Allocation | Kind::Subnet if ip_family_mismatch(v) => {
            return Err(ApiError::bad(format!(
                "invalid ipFamily: {:?} does not match prefix {:?}",
                opt_str(v, "ipFamily").unwrap_or_default(),
                opt_str(v, "prefix").unwrap_or_default()
            )))
        }
        Kind::Allocation if is_ip6(v) => Spec::Ip6(ip6_spec(v, true)?),
        Kind::Subnet if is_ip6(v) => Spec::Ip6(ip6_spec(v, false)?),
        Kind::Allocation => Spec::Allocation(alloc_spec(v)?),
        Kind::Subnet => Spec::Subnet(subnet_spec(v)?),
        Kind::Vnet => Spec::Vnet(vnet_spec(v)?),
        Kind::Nat => Spec::Nat(nat_spec(v)?),
        Kind::L4lb => Spec::L4lb(lb_spec(v)?),
        Kind::Acl => Spec::Acl(acl_spec(v)?),
        Kind::Route => Spec::Route(route_spec(v)?),
    })
}

/// Creates with the same name and this content are retries of the same request.
fn same_content(old: &Spec, new: &Spec) -> bool {
    match (old, new) {
        (Spec::Vnet(a), Spec::Vnet(b)) if b.vni == 0 => {
            a.gateway == b.gateway
                && a.state == b.state
                && a.tags == b.tags
                && a.more_gateways == b.more_gateways
        }
        (Spec::Vnet(a), Spec::Vnet(b)) => a.stored() == b.stored(),
        (Spec::L4lb(a), Spec::L4lb(b)) if b.ip.is_empty() => {
            let mut b = b.clone();
            b.ip = a.ip.clone();
            *a == b
        }
        _ => old == new,
    }
}

/// The first free address of the System VPC's IPv6 `load-balancer` subnets (a /128 each,
/// or the first 65,536 addresses of a wider one, its `::` left out), as [`pick_lb_ip`].
fn pick_lb_ip6(db: &Db, intent: &Intent) -> ApiResult<String> {
    let used = |ip: std::net::Ipv6Addr| {
        let ip = std::net::IpAddr::V6(ip);
        intent.load_balancers.values().any(|l| l.vip == ip)
            || db
                .of(Kind::L4lb)
                .any(|r| matches!(&r.spec, Spec::L4lb(l) if l.ip == ip.to_string()))
    };
    for r in db.of(Kind::Subnet).filter(|r| r.vpc == SYSTEM_VPC_ID) {
        let Spec::Ip6(sn) = &r.spec else { continue };
        if sn.allocation || sn.purpose != "load-balancer" {
            continue;
        }
        let p = sn.prefix.trunc();
        let first = u128::from(p.network());
        let candidates: Box<dyn Iterator<Item = u128>> = if p.prefix_len() == 128 {
            Box::new(std::iter::once(first))
        } else {
            let last = u128::from(p.broadcast()).min(first.saturating_add(1 << 16));
            Box::new(first + 1..=last)
        };
        if let Some(ip) = candidates
            .map(std::net::Ipv6Addr::from)
            .find(|ip| !used(*ip))
        {
            return Ok(ip.to_string());
        }
    }
    Err(ApiError::conflict(
        "invalid ip: automatic, but no free address in the System VPC's IPv6 load-balancer subnets",
    ))
}

/// The first free address of the System VPC's `load-balancer` subnets.
fn pick_lb_ip(db: &Db, intent: &Intent) -> ApiResult<String> {
    let used = |ip: &Ipv4Addr| {
        intent.load_balancers.values().any(|l| l.vip == *ip)
            || intent.nat_rules.values().any(|r| r.kind.public_ip() == *ip)
            || db
                .of(Kind::L4lb)
                .any(|r| matches!(&r.spec, Spec::L4lb(l) if l.ip == ip.to_string()))
    };
    for r in db.of(Kind::Subnet).filter(|r| r.vpc == SYSTEM_VPC_ID) {
        if let Spec::Subnet(sn) = &r.spec {
            if sn.purpose == "load-balancer" {
                let hosts: Box<dyn Iterator<Item = Ipv4Addr>> = if sn.prefix.prefix_len() >= 31 {
                    Box::new(sn.prefix.hosts().chain(std::iter::once(sn.prefix.addr())))
                } else {
                    Box::new(sn.prefix.hosts())
                };
                if let Some(ip) = hosts.into_iter().find(|ip| !used(ip)) {
                    return Ok(ip.to_string());
                }
            }
        }
    }
    Err(ApiError::conflict(
        "invalid ip: automatic, but no free address in the System VPC's load-balancer subnets",
    ))
}

/// What planning a create or update of one record works from.
struct PlanCtx<'a> {
    s: &'a Rest,
    db: &'a Db,
    intent: &'a Intent,
    id: u64,
    name: &'a str,
    tenant: &'a str,
    vpc: u64,
    /// The record before an update; `None` for a create.
    old: Option<&'a Record>,
}

impl PlanCtx<'_> {
    /// The StackFabric name of the object: kept from the old object on updates, else derived
    /// from the Netris name, avoiding the names `taken` answers true for.
    fn sf_name(&self, taken: impl Fn(&str) -> bool) -> String {
        let kept = self.old.and_then(|r| r.sf.as_ref()).map(|sf| match sf {
            SfRef::Vpc { name, .. }
            | SfRef::Pool { name, .. }
            | SfRef::Network { name, .. }
            | SfRef::Nat { name, .. }
            | SfRef::Lb { name, .. }
            | SfRef::Route { name, .. } => name.clone(),
        });
        kept.unwrap_or_else(|| sf_name(self.name, self.id, taken))
    }
}

/// What a record's StackFabric object becomes.
enum SfPlan {
    /// The record keeps the object it owns (if any).
    Keep,
    /// This object is created (or replaces the record's own) and owned by the record.
    Create(SfObj),
    /// The record points at an object that exists already (an adopted pool).
    Adopt(SfRef),
    /// The record owns no object (a disabled NAT rule or load balancer).
    Nothing,
}

/// Plans the record and the StackFabric object for `spec` (a create when `c.old` is `None`):
/// one function per kind that maps onto an object.
fn plan(c: &PlanCtx, mut spec: Spec) -> ApiResult<Plan> {
    let sf_plan = match &mut spec {
        // The System VPC's IPv6 allocation (a zone's IPv6 range) is a site IPv6 pool.
        Spec::Ip6(a) if a.allocation && c.vpc == SYSTEM_VPC_ID => plan_pool6(c, a)?,
        // Kept as records (a tenant VPC's IPv6 allocations become its ranges elsewhere).
        Spec::Vpc | Spec::Acl(_) | Spec::Ip6(_) => SfPlan::Keep,
        Spec::Allocation(a) => plan_allocation(c, a)?,
        Spec::Subnet(sn) => {
            check_subnet(c, sn)?;
            SfPlan::Keep
        }
        Spec::Vnet(v) => plan_vnet(c, v)?,
        Spec::Nat(n) => plan_nat(c, n)?,
        Spec::L4lb(l) => plan_lb(c, l)?,
        Spec::Route(r) => plan_route(c, r)?,
    };
    let (sf, add) = match sf_plan {
        SfPlan::Keep => (c.old.and_then(|o| o.sf.clone()), None),
        SfPlan::Create(obj) => (Some(obj.sf_ref()), Some(obj)),
        SfPlan::Adopt(r) => (Some(r), None),
        SfPlan::Nothing => (None, None),
    };
    Ok(Plan {
        rec: Record {
            id: c.id,
            name: c.name.to_string(),
            tenant: c.tenant.to_string(),
            vpc: c.vpc,
            spec,
            sf,
        },
        add,
    })
}

/// An IPAM allocation: in the System VPC a pool (one with the same CIDR in the fabric site is
/// adopted), in a tenant VPC the StackFabric VPC, created with its first allocation. Its
/// prefix cannot change.
fn plan_allocation(c: &PlanCtx, a: &AllocSpec) -> ApiResult<SfPlan> {
    let (s, db, intent, vpc) = (c.s, c.db, c.intent, c.vpc);
    if let Some(o) = c.old {
        if o.spec != Spec::Allocation(a.clone()) {
            return Err(ApiError::bad(
                "invalid prefix: an allocation's prefix cannot change; delete and recreate it",
            ));
        }
        return Ok(SfPlan::Keep);
    }
    if vpc == SYSTEM_VPC_ID {
        if let Some(o) = db.of(Kind::Allocation).find(|o| {
            o.vpc == SYSTEM_VPC_ID
                && matches!(&o.spec, Spec::Allocation(x) if overlaps(x.prefix, a.prefix))
        }) {
            return Err(ApiError::conflict(format!(
                "invalid prefix: {} overlaps allocation {:?}",
                a.prefix, o.name
            )));
        }
        return Ok(
            match intent
                .pools
                .values()
                .find(|p| p.cidr == a.prefix.into() && p.site == s.fabric_site)
            {
                Some(p) => SfPlan::Adopt(SfRef::Pool {
                    name: p.name.clone(),
                    adopted: true,
                }),
                None => SfPlan::Create(SfObj::Pool(Pool {
                    name: sf_name(c.name, c.id, |n| intent.pools.contains_key(n)),
                    cidr: a.prefix.into(),
                    site: s.fabric_site.clone(),
                })),
            },
        );
    }
    if let Some(o) = db.of(Kind::Allocation).find(|o| {
        o.vpc == vpc && matches!(&o.spec, Spec::Allocation(x) if overlaps(x.prefix, a.prefix))
    }) {
        return Err(ApiError::conflict(format!(
            "invalid prefix: {} overlaps allocation {:?} of the same VPC",
            a.prefix, o.name
        )));
    }
    if db.sf_vpc(vpc).is_some() {
        return Ok(SfPlan::Keep);
    }
    let tenant = c.tenant.to_string();
    let vpc_name = db.vpc_name(vpc);
    Ok(SfPlan::Create(SfObj::Vpc(Vpc {
        ipv6_ranges: ip6_ranges(db, vpc, None, &[]),
        tenant: tenant.clone(),
        name: sf_name(&vpc_name, vpc, |n| {
            intent.vpcs.contains_key(&VpcRef::new(&tenant, n))
        }),
        cidr: a.prefix,
        site: s.fabric_site.clone(),
        id: 0,
    })))
}

/// An IPv6 allocation of the System VPC (what CloudStack makes of a zone's IPv6 range for
/// routed offerings): an IPv6 pool of the fabric site, so the tenant VPC ranges inside it are
/// routed (announced by their gateway). A pool of the site that holds the prefix (the same
/// one, or a larger one the operator made, as the zone's range is often a /64 of the site's
/// block) is adopted. Deleting the allocation deletes a pool it created, refused while a VPC's
/// range is inside it; an adopted pool stays.
fn plan_pool6(c: &PlanCtx, a: &Ip6Spec) -> ApiResult<SfPlan> {
    let (s, intent) = (c.s, c.intent);
    if let Some(o) = c.old {
        if o.spec != Spec::Ip6(a.clone()) {
            return Err(ApiError::bad(
                "invalid prefix: an allocation's prefix cannot change; delete and recreate it",
            ));
        }
        return Ok(SfPlan::Keep);
    }
    if let Some(o) = c.db.of(Kind::Allocation).find(|o| {
        o.vpc == SYSTEM_VPC_ID
            && matches!(&o.spec, Spec::Ip6(x) if x.allocation
                && (x.prefix.contains(&a.prefix) || a.prefix.contains(&x.prefix)))
    }) {
        return Err(ApiError::conflict(format!(
            "invalid prefix: {} overlaps allocation {:?}",
            a.prefix, o.name
        )));
    }
    let cidr = ipnet::IpNet::V6(a.prefix);
    Ok(
        match intent
            .pools
            .values()
            .filter(|p| p.site == s.fabric_site)
            .find(|p| p.v6().is_some_and(|p6| p6.contains(&a.prefix)))
        {
            Some(p) => SfPlan::Adopt(SfRef::Pool {
                name: p.name.clone(),
                adopted: true,
            }),
            None => SfPlan::Create(SfObj::Pool(Pool {
                name: sf_name(c.name, c.id, |n| intent.pools.contains_key(n)),
                cidr,
                site: s.fabric_site.clone(),
            })),
        },
    )
}

/// A subnet must lie in an allocation of its VPC.
fn check_subnet(c: &PlanCtx, sn: &SubnetSpec) -> ApiResult<()> {
    let inside = c.db.of(Kind::Allocation).any(|a| {
        a.vpc == c.vpc && matches!(&a.spec, Spec::Allocation(x) if x.prefix.contains(&sn.prefix))
    });
    if !inside {
        return Err(ApiError::bad(format!(
            "invalid prefix: {} is not inside an IPAM allocation of VPC {:?}",
            sn.prefix,
            c.db.vpc_name(c.vpc)
        )));
    }
    Ok(())
}

/// The IPv6 ranges of Netris VPC `vpc`: its IPv6 allocations' prefixes (with `added`,
/// without the records `removed`), in id order.
fn ip6_ranges(db: &Db, vpc: u64, added: Option<&Record>, removed: &[u64]) -> Vec<Ipv6Net> {
    db.of(Kind::Allocation)
        .filter(|r| !removed.contains(&r.id))
        .chain(added)
        .filter(|r| r.vpc == vpc)
        .filter_map(|r| match &r.spec {
            Spec::Ip6(a) if a.allocation => Some(a.prefix),
            _ => None,
        })
        .collect()
}

/// An IPv6 allocation of a tenant VPC is one of the StackFabric VPC's `ipv6_ranges`: after
/// `added` is created or `removed` deleted, the VPC with its new ranges (validated), when the
/// VPC exists (it comes with the first IPv4 allocation, which picks the ranges up) and they
/// changed.
fn vpc_ranges_update(
    db: &Db,
    intent: &Intent,
    vpc: u64,
    added: Option<&Record>,
    removed: &[u64],
) -> ApiResult<Option<SfObj>> {
    if vpc == SYSTEM_VPC_ID {
        return Ok(None);
    }
    let Some((t, name)) = db.sf_vpc(vpc) else {
        return Ok(None);
    };
    let Some(old) = intent.vpcs.get(&VpcRef::new(&t, &name)) else {
        return Ok(None);
    };
    let ranges = ip6_ranges(db, vpc, added, removed);
    if ranges == old.ipv6_ranges {
        return Ok(None);
    }
    let v = Vpc {
        ipv6_ranges: ranges,
        ..old.clone()
    };
    sf_core::validate::validate_vpc_ipv6_ranges_update(intent, &v)?;
    Ok(Some(SfObj::Vpc(v)))
}

/// A vnet: a network of the VPC's StackFabric VPC, with the lowest free VNI when `vxlanID` is
/// 0 (written back into the spec). Its VNI and gateway cannot change.
fn plan_vnet(c: &PlanCtx, v: &mut VnetSpec) -> ApiResult<SfPlan> {
    let (s, db, intent, vpc) = (c.s, c.db, c.intent, c.vpc);
    let ipv6_prefix = vnet_ipv6_prefix(v)?;
    if let Some(o) = c.old {
        return match &o.spec {
            Spec::Vnet(ov) if ov.gateway == v.gateway && (v.vni == 0 || ov.vni == v.vni) => {
                v.vni = ov.vni;
                vnet_ipv6_update(c, o, v, ipv6_prefix)
            }
            _ => Err(ApiError::bad(
                "invalid vnet: vxlanID and gateways cannot change; delete and recreate the vnet",
            )),
        };
    }
    let (t, sv) = s.require_sf_vpc(db, vpc)?;
    let subnets: Vec<Ipv4Net> = db
        .of(Kind::Subnet)
        .filter(|r| r.vpc == vpc)
        .filter_map(|r| match &r.spec {
            Spec::Subnet(sn) if sn.purpose == "common" => Some(sn.prefix),
            _ => None,
        })
        .collect();
    let nname = sf_name(c.name, c.id, |n| {
        intent.networks.contains_key(&VpcChildRef::new(&t, &sv, n))
    });
    let mut n = vnet_network(v, &subnets, &t, &sv, &nname);
    n.ipv6_prefix = ipv6_prefix;
    check_port_addrs(v, &n)?;
    if n.vni == 0 {
        let used = intent.used_vnis();
        n.vni = sf_core::VNI_POOL
            .clone()
            .find(|x| !used.contains(x))
            .ok_or_else(|| ApiError::conflict("the VNI pool is exhausted"))?;
        v.vni = n.vni;
    }
    Ok(SfPlan::Create(SfObj::Network(n)))
}

/// A vnet's port addresses (`ports[i].ipv4`/`ipv6`) must be hosts of its tier `n`: of its
/// CIDR, not the gateway, network or broadcast address; of its IPv6 /64, neither `::` nor the
/// router's `::1`.
fn check_port_addrs(v: &VnetSpec, n: &sf_core::model::Network) -> ApiResult<()> {
    for p in &v.port_addrs {
        let (ok, of) = match p.addr {
            std::net::IpAddr::V4(a) => (
                n.cidr.contains(&a)
                    && a != n.gateway
                    && a != n.cidr.network()
                    && a != n.cidr.broadcast(),
                n.cidr.to_string(),
            ),
            std::net::IpAddr::V6(a) => match n.ipv6_prefix {
                Some(p6) => (
                    p6.contains(&a) && u128::from(a) > u128::from(p6.network()) + 1,
                    p6.to_string(),
                ),
                None => (false, "none: the tier has no IPv6 gateway".into()),
            },
        };
        if !ok {
            return Err(ApiError::bad(format!(
                "invalid {}: {} is not a host address of the tier ({of})",
                p.field, p.addr
            )));
        }
    }
    Ok(())
}

/// A PUT of a vnet may add its IPv6 gateway (the tier becomes dual-stack: its network is
/// replaced with the /64); changing or removing it is refused like the other gateways. Its
/// port addresses are checked against the tier as it will be.
fn vnet_ipv6_update(
    c: &PlanCtx,
    old: &Record,
    v: &VnetSpec,
    ipv6_prefix: Option<Ipv6Net>,
) -> ApiResult<SfPlan> {
    let net = match &old.sf {
        Some(SfRef::Network { tenant, vpc, name }) => {
            c.intent.networks.get(&VpcChildRef::new(tenant, vpc, name))
        }
        _ => None,
    };
    if let Some(n) = net {
        check_port_addrs(
            v,
            &sf_core::model::Network {
                ipv6_prefix: ipv6_prefix.or(n.ipv6_prefix),
                ..n.clone()
            },
        )?;
    }
    match net {
        Some(n) if n.ipv6_prefix != ipv6_prefix => {
            if n.ipv6_prefix.is_some() {
                return Err(ApiError::bad(
                    "invalid gateways: a tier's IPv6 gateway cannot change; delete and recreate the vnet",
                ));
            }
            Ok(SfPlan::Create(SfObj::Network(sf_core::model::Network {
                ipv6_prefix,
                ..n.clone()
            })))
        }
        _ => Ok(SfPlan::Keep),
    }
}

/// A NAT rule of the VPC's StackFabric VPC (none while the record is disabled).
fn plan_nat(c: &PlanCtx, n: &NatSpec) -> ApiResult<SfPlan> {
    let (t, sv) = c.s.require_sf_vpc(c.db, c.vpc)?;
    let name = c.sf_name(|x| {
        c.intent
            .nat_rules
            .contains_key(&VpcChildRef::new(&t, &sv, x))
    });
    Ok(match nat_rule(n, &t, &sv, &name)? {
        Some(r) => SfPlan::Create(SfObj::Nat(r)),
        None => SfPlan::Nothing,
    })
}

/// A load balancer of the VPC's StackFabric VPC (none while the record is disabled); an
/// automatic VIP is kept on updates, else the first free one; its source list comes from the
/// LB ACL records.
fn plan_lb(c: &PlanCtx, l: &mut LbSpec) -> ApiResult<SfPlan> {
    let (t, sv) = c.s.require_sf_vpc(c.db, c.vpc)?;
    if l.ip.is_empty() {
        l.ip = match c.old.map(|o| &o.spec) {
            Some(Spec::L4lb(ol)) => ol.ip.clone(),
            _ if l.ipv6 => pick_lb_ip6(c.db, c.intent)?,
            _ => pick_lb_ip(c.db, c.intent)?,
        };
    }
    let name = c.sf_name(|x| {
        c.intent
            .load_balancers
            .contains_key(&VpcChildRef::new(&t, &sv, x))
    });
    Ok(match load_balancer(l, &t, &sv, &name)? {
        Some(mut lb) => {
            lb.source_cidrs = acl_map::lb_sources(c.db, l);
            SfPlan::Create(SfObj::Lb(lb))
        }
        None => SfPlan::Nothing,
    })
}

/// A static route of the VPC's StackFabric VPC.
fn plan_route(c: &PlanCtx, r: &RouteSpec) -> ApiResult<SfPlan> {
    let (t, sv) = c.s.require_sf_vpc(c.db, c.vpc)?;
    let name = c.sf_name(|x| c.intent.routes.contains_key(&VpcChildRef::new(&t, &sv, x)));
    Ok(SfPlan::Create(SfObj::Route(static_route(
        r, &t, &sv, &name,
    ))))
}

/// The Netris name of a posted object (routes are named by their description).
fn posted_name(kind: Kind, v: &Value) -> ApiResult<String> {
    // CloudStack identifies a route by its prefix (all routes of a VPC share one
    // description), so a route's Netris name is its prefix, unique per VPC.
    if kind == Kind::Route {
        return Ok(opt_str(v, "prefix").unwrap_or_default());
    }
    req_str(v, "name")
}

/// The owner tenant and VPC of a posted object.
fn owner(s: &Rest, db: &Db, kind: Kind, v: &Value) -> ApiResult<(String, u64)> {
    Ok(match kind {
        Kind::Vpc => (s.resolve_tenant(db, v)?, 0),
        Kind::Allocation | Kind::Subnet | Kind::Acl => {
            let vpc = s.resolve_vpc(db, v, true)?;
            (s.vpc_tenant(db, vpc), vpc)
        }
        _ => {
            let vpc = s.resolve_vpc(db, v, false)?;
            (s.vpc_tenant(db, vpc), vpc)
        }
    })
}

/// The answer's message; for an ACL it says what the record enforces (see [`acl_map`]).
fn message(db: &Db, rec: &Record, what: &str) -> String {
    match rec.kind() {
        Kind::Acl => format!("ACL {what}; {}", acl_map::describe(db, rec)),
        k => format!("{} {what}", k.what()),
    }
}

/// Brings the ACL lists the REST layer derives for Netris VPC `vpc` in line with `after` (the
/// records as this transaction leaves them): changed lists are validated against
/// `intent_after` (the intent as the transaction leaves it, without the lists) and written,
/// lists of tiers without records are removed.
fn sync_acls(
    txn: &mut Txn,
    intent: &Intent,
    intent_after: &Intent,
    after: &Db,
    vpc: u64,
) -> ApiResult<()> {
    let Some((tenant, sf_vpc)) = after.sf_vpc(vpc) else {
        return Ok(());
    };
    let want = acl_map::derive(after, vpc, &tenant, &sf_vpc);
    let have: HashMap<&str, &sf_core::model::AclList> = intent
        .acls
        .iter()
        .filter(
            |(
                VpcChildRef {
                    tenant: t,
                    vpc: v,
                    name: n,
                },
                _,
            )| { *t == tenant && *v == sf_vpc && n.starts_with(acl_map::LIST_PREFIX) },
        )
        .map(|(k, l)| (k.name.as_str(), l))
        .collect();
    for (name, l) in &want {
        let old = have.get(name.as_str());
        if old != Some(&l) {
            sf_core::validate::validate_acl(intent_after, l)?;
            txn.put_acl(l, old.is_some());
        }
    }
    for (name, l) in have {
        if !want.contains_key(name) {
            txn.delete_acl(l);
        }
    }
    Ok(())
}

/// The destinations of the ACL records among `recs` (what an ACL write can touch).
fn acl_dsts<'r>(recs: impl IntoIterator<Item = &'r Record>) -> BTreeSet<ipnet::IpNet> {
    recs.into_iter()
        .filter_map(|r| match &r.spec {
            Spec::Acl(a) => Some(a.dst_prefix),
            _ => None,
        })
        .collect()
}

/// Brings the source lists of the load balancers whose VIP/32 (/128) is among `dsts` (the
/// destinations of the ACL records written) in line with the LB ACL records as `after` leaves
/// them (see [`acl_map::lb_sources`]): an LB whose list changes is rewritten in place.
fn sync_lb_sources(
    txn: &mut Txn,
    intent: &Intent,
    after: &Db,
    dsts: &BTreeSet<ipnet::IpNet>,
) -> ApiResult<()> {
    for r in after.of(Kind::L4lb) {
        let (Spec::L4lb(spec), Some(SfRef::Lb { tenant, vpc, name })) = (&r.spec, &r.sf) else {
            continue;
        };
        let vip = spec.ip.parse::<std::net::IpAddr>().map(ipnet::IpNet::from);
        if !vip.is_ok_and(|v| dsts.contains(&v)) {
            continue;
        }
        let Some(lb) = intent
            .load_balancers
            .get(&VpcChildRef::new(tenant, vpc, name))
        else {
            continue;
        };
        let want = acl_map::lb_sources(after, spec);
        if want != lb.source_cidrs {
            sf_core::validate::validate_lb_source_cidrs(&want)?;
            let mut lb = lb.clone();
            lb.source_cidrs = want;
            tracing::info!(lb = %r.name, sources = ?lb.source_cidrs, "LB source list from LB ACLs");
            txn.add_sf(&SfObj::Lb(lb), true);
        }
    }
    Ok(())
}

/// `intent` without the REST-derived ACL lists attached to the network a record owns (they
/// go with the tier; see [`sync_acls`]).
fn without_derived_acls(intent: &Intent, sf: &SfRef) -> Intent {
    let mut i = intent.clone();
    if let SfRef::Network { tenant, vpc, name } = sf {
        i.acls.retain(
            |VpcChildRef {
                 tenant: t,
                 vpc: v,
                 name: n,
             },
             l| {
                !(t == tenant
                    && v == vpc
                    && n.starts_with(acl_map::LIST_PREFIX)
                    && l.tiers.contains(name))
            },
        );
    }
    i
}

async fn create(s: &Rest, kind: Kind, body: &[u8]) -> Res {
    let v = parse_body(body)?;
    let name = posted_name(kind, &v)?;
    let spec = parse_spec(kind, &v)?;
    let _g = s.fabric.write_guard().await;
    if kind == Kind::Vpc {
        s.ensure_tenants().await?;
    }
    let db = s.db().await?;
    let (tenant, vpc) = owner(s, &db, kind, &v)?;
    // Idempotent create by name.
    let existing = if name.is_empty() {
        db.of(kind)
            .find(|r| r.vpc == vpc && same_content(&r.spec, &spec))
    } else if kind == Kind::Route {
        db.of(kind).find(|r| r.vpc == vpc && r.name == name)
    } else {
        db.find(kind, &tenant, &name)
    };
    if let Some(r) = existing {
        // A VPC record's `vpc` is its own id.
        if (kind == Kind::Vpc || r.vpc == vpc) && same_content(&r.spec, &spec) {
            let data = s.intent(|i| render(s, &db, i, r));
            return Ok(created(
                kind,
                r.id,
                message(&db, r, "already exists (unchanged)"),
                data,
            ));
        }
        return Err(ApiError::conflict(format!(
            "invalid name: {} {:?} already exists with other content",
            kind.what(),
            r.name
        )));
    }
    let sfk = s.fabric.store().keys().clone();
    let mut txn = Txn::new(&s.keys, &sfk, &db);
    let id = txn.alloc_id();
    let name = if name.is_empty() {
        format!("route-{id}")
    } else {
        name
    };
    let vpc = if kind == Kind::Vpc { id } else { vpc };
    let mut p = s.intent(|i| {
        let c = PlanCtx {
            s,
            db: &db,
            intent: i,
            id,
            name: &name,
            tenant: &tenant,
            vpc,
            old: None,
        };
        plan(&c, spec)
    })?;
    if let Some(SfObj::Vpc(v)) = &mut p.add {
        v.id = free_vpc_id(s, &v.site).await?;
    }
    if let Some(a) = &p.add {
        s.intent(|i| a.validate(i))?;
        txn.add_sf(a, false);
    }
    if let Some(v) = s.intent(|i| vpc_ranges_update(&db, i, vpc, Some(&p.rec), &[]))? {
        txn.add_sf(&v, true);
    }
    txn.put_record(&p.rec, None);
    if matches!(kind, Kind::Acl | Kind::Vnet) {
        let mut after = (*db).clone();
        after.recs.insert(id, (p.rec.clone(), 0));
        s.intent(|i| {
            let mut i2 = i.clone();
            if let Some(SfObj::Network(n)) = &p.add {
                i2.networks.insert(n.key(), n.clone());
            }
            sync_acls(&mut txn, i, &i2, &after, vpc)?;
            if kind == Kind::Acl {
                sync_lb_sources(&mut txn, i, &after, &acl_dsts([&p.rec]))?;
            }
            Ok::<_, ApiError>(())
        })?;
    }
    s.commit(txn).await?;
    let db = s.db().await?;
    let data = s.intent(|i| render(s, &db, i, &p.rec));
    tracing::info!(kind = kind.seg(), id, name = %p.rec.name, sf = ?p.rec.sf, "REST object created");
    Ok(created(
        kind,
        p.rec.id,
        message(&db, &p.rec, "created"),
        data,
    ))
}

/// A create's answer in the SDK's response model: `ResAddEditBody` (l4lb) has `data` = the
/// integer id, `InlineResponse200` (acl) the id at the top level; the others take the object.
fn created(kind: Kind, id: u64, msg: String, data: Value) -> Response {
    match kind {
        Kind::L4lb => ok(msg, json!(id)),
        Kind::Acl => {
            let body = json!({"isSuccess": true, "message": msg, "id": id, "data": data});
            (axum::http::StatusCode::OK, axum::Json(body)).into_response()
        }
        _ => ok(msg, data),
    }
}

/// A free VPC id in `site`, picked from the index as the gRPC API's allocation does
/// (`IntentStore::pick_vpc_id`); the transaction's compare on the id's claim keeps a racing
/// allocation from ever sharing it.
async fn free_vpc_id(s: &Rest, site: &str) -> ApiResult<u32> {
    let known = s
        .fabric
        .with_view(|v, _| sf_store::intent::IntentStore::known_vpc_ids(v, site));
    match s
        .fabric
        .store()
        .pick_vpc_id(site, sf_core::VPC_ID_POOL, &known)
        .await
    {
        Ok(id) => Ok(id),
        Err(sf_store::intent::WriteError::PoolExhausted(_)) => {
            Err(ApiError::conflict("the VPC id pool is exhausted"))
        }
        Err(e) => Err(e.into()),
    }
}

async fn update(s: &Rest, kind: Kind, id: u64, body: &[u8]) -> Res {
    let patch = parse_body(body)?;
    let _g = s.fabric.write_guard().await;
    let db = s.db().await?;
    let old = db.get(kind, id).ok_or_else(|| not_found(kind, id))?.clone();
    // A PUT may carry only what changes: overlay it on the current object.
    let mut merged = s.intent(|i| render(s, &db, i, &old));
    // The listed shape back into the posted one (NAT enums are objects when listed).
    if let Some(m) = merged.as_object_mut() {
        for k in ["action", "protocol", "state"] {
            if let Some(v) = m.get(k).and_then(|x| x.get("value")).cloned() {
                m.insert(k.into(), v);
            }
        }
        if let Spec::L4lb(l) = &old.spec {
            m.insert("healthCheck".into(), json!(l.health_check));
            m.insert("automatic".into(), json!(l.automatic));
        }
    }
    if let (Some(m), Some(p)) = (merged.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            if !v.is_null() {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    let name = if kind == Kind::Route {
        opt_str(&merged, "prefix").unwrap_or_else(|| old.name.clone())
    } else {
        req_str(&merged, "name")?
    };
    let spec = parse_spec(kind, &merged)?;
    // A PUT without a VPC reference keeps the object's VPC (some listed shapes, like
    // `L4LoadBalancerItem`, carry none to merge from).
    let names_vpc = ["vpc", "vpcID", "vpc_id"]
        .iter()
        .any(|k| patch.get(k).is_some_and(|v| !v.is_null()));
    if kind != Kind::Vpc && names_vpc {
        let vpc = s.resolve_vpc(&db, &merged, true)?;
        if vpc != old.vpc {
            return Err(ApiError::bad(
                "invalid vpc: an object cannot move to another VPC",
            ));
        }
    }
    let clash = if kind == Kind::Route {
        db.of(kind)
            .find(|o| o.vpc == old.vpc && o.name == name && o.id != id)
    } else {
        db.find(kind, &old.tenant, &name).filter(|o| o.id != id)
    };
    if let Some(o) = clash {
        return Err(ApiError::conflict(format!(
            "invalid name: {} {:?} already exists (id {})",
            kind.what(),
            name,
            o.id
        )));
    }
    // Port addresses are not stored, so a PUT carrying them is planned (checked) even when
    // the stored content would not change.
    let carries_ports = matches!(&spec, Spec::Vnet(v) if !v.port_addrs.is_empty());
    if name == old.name && same_content(&old.spec, &spec) && !carries_ports {
        let data = s.intent(|i| render(s, &db, i, &old));
        return Ok(ok(message(&db, &old, "unchanged"), data));
    }
    let p = s.intent(|i| {
        let c = PlanCtx {
            s,
            db: &db,
            intent: i,
            id,
            name: &name,
            tenant: &old.tenant,
            vpc: old.vpc,
            old: Some(&old),
        };
        plan(&c, spec)
    })?;
    let sfk = s.fabric.store().keys().clone();
    let mut txn = Txn::new(&s.keys, &sfk, &db);
    // Only NAT, LB and route records replace their StackFabric object on update (and a vnet
    // that gains its IPv6 gateway).
    if matches!(kind, Kind::Nat | Kind::L4lb | Kind::Route)
        || (kind == Kind::Vnet && p.add.is_some())
    {
        s.intent(|i| -> ApiResult<()> {
            let base = match &old.sf {
                Some(r) if sf_exists(i, r) => without(i, r),
                _ => i.clone(),
            };
            if let Some(a) = &p.add {
                a.validate(&base)?;
            }
            let same_key = old.sf.is_some() && p.add.as_ref().map(SfObj::sf_ref) == old.sf;
            if let Some(r) = old.sf.as_ref().filter(|r| sf_exists(i, r)) {
                if !same_key {
                    txn.remove_sf(i, r);
                }
            }
            if let Some(a) = &p.add {
                txn.add_sf(a, same_key && sf_exists(i, &a.sf_ref()));
            }
            Ok(())
        })?;
    }
    txn.put_record(&p.rec, Some(db.rev(id)));
    if kind == Kind::Acl {
        let mut after = (*db).clone();
        after.recs.insert(id, (p.rec.clone(), 0));
        s.intent(|i| {
            sync_acls(&mut txn, i, i, &after, old.vpc)?;
            sync_lb_sources(&mut txn, i, &after, &acl_dsts([&old, &p.rec]))
        })?;
    }
    s.commit(txn).await?;
    let db = s.db().await?;
    let data = s.intent(|i| render(s, &db, i, &p.rec));
    Ok(ok(message(&db, &p.rec, "updated"), data))
}

/// Records that keep a record from being deleted.
fn blockers(db: &Db, r: &Record) -> Option<String> {
    let first = |it: &mut dyn Iterator<Item = &Record>| {
        it.next()
            .map(|x| format!("{} {:?} (id {})", x.kind().what(), x.name, x.id))
    };
    match &r.spec {
        Spec::Vpc => first(&mut db.recs.values().map(|(x, _)| x).filter(|x| {
            x.vpc == r.id
                && x.id != r.id
                && !matches!(x.kind(), Kind::Subnet | Kind::Acl)
        })),
        Spec::Allocation(a) => first(&mut db.of(Kind::Subnet).filter(|x| {
            x.vpc == r.vpc && matches!(&x.spec, Spec::Subnet(sn) if a.prefix.contains(&sn.prefix))
        })),
        Spec::Subnet(sn) => first(&mut db.of(Kind::Vnet).filter(|x| {
            x.vpc == r.vpc
                && matches!(&x.spec, Spec::Vnet(v) if sn.prefix.contains(&v.gateway.addr()) && sn.purpose == "common")
        })),
        _ => None,
    }
}

async fn delete_ids(s: &Rest, kind: Kind, ids: &[u64]) -> Res {
    let _g = s.fabric.write_guard().await;
    let db = s.db().await?;
    let sfk = s.fabric.store().keys().clone();
    let mut txn = Txn::new(&s.keys, &sfk, &db);
    let mut gone = Vec::new();
    for &id in ids {
        let r = db.get(kind, id).ok_or_else(|| not_found(kind, id))?;
        if let Some(b) = blockers(&db, r) {
            return Err(ApiError::conflict(format!(
                "{} {:?} is still used by {b}",
                kind.what(),
                r.name
            )));
        }
        if let Some(sf) = &r.sf {
            s.intent(|i| -> ApiResult<()> {
                if sf_exists(i, sf) {
                    // A tier's derived ACL list goes with it (removed by sync_acls below).
                    check_remove(&without_derived_acls(i, sf), sf)?;
                    txn.remove_sf(i, sf);
                }
                Ok(())
            })?;
        }
        if kind == Kind::Vpc {
            // Metadata-only children go with the VPC.
            for c in db
                .recs
                .values()
                .map(|(x, _)| x)
                .filter(|x| x.vpc == id && matches!(x.kind(), Kind::Subnet | Kind::Acl))
            {
                txn.delete_record(c, db.rev(c.id));
            }
        }
        txn.delete_record(r, db.rev(id));
        gone.push(json!({"id": id, "name": r.name}));
    }
    if kind == Kind::Allocation {
        let removed: Vec<&Record> = ids
            .iter()
            .filter_map(|id| db.recs.get(id))
            .map(|(r, _)| r)
            .collect();
        // A VPC whose owning (IPv4) allocation goes too is deleted, not updated.
        let vpcs: BTreeSet<u64> = removed
            .iter()
            .filter(|r| {
                !removed
                    .iter()
                    .any(|o| o.vpc == r.vpc && matches!(o.sf, Some(SfRef::Vpc { .. })))
            })
            .map(|r| r.vpc)
            .collect();
        for vpc in vpcs {
            if let Some(v) = s.intent(|i| vpc_ranges_update(&db, i, vpc, None, ids))? {
                txn.add_sf(&v, true);
            }
        }
    }
    if matches!(kind, Kind::Acl | Kind::Vnet) {
        let mut after = (*db).clone();
        let mut vpcs = std::collections::BTreeSet::new();
        for id in ids {
            if let Some((r, _)) = after.recs.remove(id) {
                vpcs.insert(r.vpc);
            }
        }
        s.intent(|i| -> ApiResult<()> {
            let mut i2 = i.clone();
            for id in ids {
                if let Some(SfRef::Network { tenant, vpc, name }) = db.recs[id].0.sf.as_ref() {
                    i2.networks.remove(&VpcChildRef::new(tenant, vpc, name));
                }
            }
            for vpc in vpcs {
                sync_acls(&mut txn, i, &i2, &after, vpc)?;
            }
            if kind == Kind::Acl {
                let gone = ids.iter().filter_map(|id| db.recs.get(id).map(|(r, _)| r));
                sync_lb_sources(&mut txn, i, &after, &acl_dsts(gone))?;
            }
            Ok(())
        })?;
    }
    s.commit(txn).await?;
    tracing::info!(kind = kind.seg(), ?ids, "REST objects deleted");
    // `VPCResponseObjectOK` wants `data` an object; the other delete answers take a list.
    let data = if kind == Kind::Vpc && gone.len() == 1 {
        gone.pop().unwrap_or_default()
    } else {
        Value::Array(gone)
    };
    Ok(ok(format!("{} deleted", kind.what()), data))
}

/// Ids from a v1 delete body: `{"id": [1, 2]}` or `{"id": 1}`.
fn body_ids(v: &Value) -> ApiResult<Vec<u64>> {
    let bad = || ApiError::bad("invalid id: expected a number or a list of numbers");
    match v.get("id") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                Value::Number(n) => n.as_u64().ok_or_else(bad),
                Value::String(s) => s.parse().map_err(|_| bad()),
                _ => Err(bad()),
            })
            .collect(),
        Some(x) => opt_u64(&json!({"id": x}), "id")?
            .map(|i| vec![i])
            .ok_or_else(bad),
        None => Err(ApiError::bad("invalid id: required")),
    }
}

// ---------------------------------------------------------------------------------------------
// endpoints

async fn sites(State(s): St) -> Res {
    Ok(ok("", json!([s.site_json()])))
}

async fn tenants(State(s): St) -> Res {
    // Reads take no lock; only the first call (admin tenant or ids missing) writes, under
    // the write lock, and ensure_tenants checks again there.
    if !s.tenants_complete(&*s.db().await?) {
        let _g = s.fabric.write_guard().await;
        s.ensure_tenants().await?;
    }
    let db = s.db().await?;
    let items: Vec<Value> = s.intent(|i| {
        i.tenants
            .values()
            .map(|t| json!({"id": db.tenant_id(&t.name), "name": t.name, "description": t.description}))
            .collect()
    });
    Ok(ok("", Value::Array(items)))
}

async fn list_vpcs(State(s): St, Query(q): Q) -> Res {
    let rev = s.fabric.revision();
    let key = q.is_empty().then_some("vpc-list");
    if let Some(r) = key.and_then(|k| cached_list(&s, k, rev)) {
        return Ok(r);
    }
    let db = s.db().await?;
    let mut items = vec![];
    if site_matches(&s, &q) {
        let by_id = qall(&q, "filterByVpc");
        let want = |id: u64, name: &str| {
            if let Some(ids) = &by_id {
                if !ids.iter().any(|v| v.parse::<u64>() == Ok(id)) {
                    return false;
                }
            }
            match qget(&q, "vpc").or_else(|| qget(&q, "id")) {
                Some(v) => v.parse::<u64>().map(|x| x == id).unwrap_or(v == name),
                _ => true,
            }
        };
        if want(SYSTEM_VPC_ID, SYSTEM_VPC_NAME) {
            items.push(system_vpc(&s, &db));
        }
        s.intent(|i| {
            for r in db.of(Kind::Vpc).filter(|r| want(r.id, &r.name)) {
                items.push(render(&s, &db, i, r));
            }
        });
    }
    Ok(list_answer(&s, key, rev, items))
}

async fn get_vpc(State(s): St, Path(id): Path<String>) -> Res {
    if id_of(&id)? == SYSTEM_VPC_ID {
        let db = s.db().await?;
        return Ok(ok("", system_vpc(&s, &db)));
    }
    get_kind(&s, Kind::Vpc, &id).await
}

async fn vpc_resources(State(s): St, Path(id): Path<String>) -> Res {
    let id = id_of(&id)?;
    let db = s.db().await?;
    if id != SYSTEM_VPC_ID && db.get(Kind::Vpc, id).is_none() {
        return Err(not_found(Kind::Vpc, id));
    }
    // `VPCResource`: one object per site (there is one), its objects listed by kind.
    let tenant_id = db.tenant_id(&s.vpc_tenant(&db, id));
    let of = |k: Kind| -> Vec<Value> {
        db.of(k)
            .filter(|r| r.vpc == id && r.id != id)
            .map(|r| json!({"id": r.id, "name": r.name, "tenant": tenant_id}))
            .collect()
    };
    let site = json!({
        "id": SITE_ID, "site": s.site_json(), "bgp": [], "roh": [],
        "vnet": of(Kind::Vnet), "ipam": of(Kind::Subnet), "route": of(Kind::Route),
        "allocation": of(Kind::Allocation),
    });
    Ok(ok("", json!([site])))
}

async fn ipam_tree(State(s): St, Query(q): Q) -> Res {
    list_kind(&s, Kind::Allocation, &q).await
}

macro_rules! kind_endpoints {
    ($kind:expr, $list:ident, $get:ident, $post:ident, $put:ident, $del:ident) => {
        async fn $list(State(s): St, Query(q): Q) -> Res {
            list_kind(&s, $kind, &q).await
        }
        #[allow(dead_code)]
        async fn $get(State(s): St, Path(id): Path<String>) -> Res {
            get_kind(&s, $kind, &id).await
        }
        async fn $post(State(s): St, body: Bytes) -> Res {
            create(&s, $kind, &body).await
        }
        async fn $put(State(s): St, Path(id): Path<String>, body: Bytes) -> Res {
            update(&s, $kind, id_of(&id)?, &body).await
        }
        async fn $del(State(s): St, Path(id): Path<String>) -> Res {
            delete_ids(&s, $kind, &[id_of(&id)?]).await
        }
    };
}

kind_endpoints!(
    Kind::Vpc,
    _list_vpc_records,
    _get_vpc_record,
    post_vpc,
    put_vpc,
    delete_vpc
);
kind_endpoints!(
    Kind::Allocation,
    list_allocations,
    _get_allocation,
    post_allocation,
    put_allocation,
    delete_allocation
);
kind_endpoints!(
    Kind::Subnet,
    list_subnets,
    _get_subnet,
    post_subnet,
    put_subnet,
    delete_subnet
);
kind_endpoints!(
    Kind::Vnet,
    list_vnets,
    get_vnet,
    post_vnet,
    put_vnet,
    delete_vnet
);
kind_endpoints!(Kind::Nat, list_nats, get_nat, post_nat, put_nat, delete_nat);
kind_endpoints!(Kind::L4lb, list_lbs, get_lb, post_lb, put_lb, delete_lb);
kind_endpoints!(
    Kind::Acl,
    list_acls,
    _get_acl,
    post_acl,
    _put_acl,
    delete_acl_path
);
kind_endpoints!(
    Kind::Route,
    list_routes,
    _get_route,
    post_route,
    _put_route,
    delete_route_path
);

async fn put_acl_v1(State(s): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    let id = opt_u64(&v, "id")?.ok_or_else(|| ApiError::bad("invalid id: required"))?;
    update(&s, Kind::Acl, id, &body).await
}

async fn delete_acl_v1(State(s): St, body: Bytes) -> Res {
    let ids = body_ids(&parse_body(&body)?)?;
    delete_ids(&s, Kind::Acl, &ids).await
}

async fn put_route_v1(State(s): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    // `RoutesPutBody` carries `route_id`.
    let id = match opt_u64(&v, "route_id")? {
        Some(id) => id,
        None => opt_u64(&v, "id")?.ok_or_else(|| ApiError::bad("invalid route_id: required"))?,
    };
    update(&s, Kind::Route, id, &body).await
}

async fn delete_route_v1(State(s): St, body: Bytes) -> Res {
    let ids = body_ids(&parse_body(&body)?)?;
    delete_ids(&s, Kind::Route, &ids).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /api/tenants` once the tenants are recorded is a read: it answers while a write
    /// holds the coordinator's write lock (it used to take that lock on every call).
    #[tokio::test]
    async fn tenant_lists_do_not_wait_for_the_write_lock() {
        use sf_store::{intent::IntentStore, keys::Keys, mem::MemStore};
        use tower::ServiceExt;
        let kv: Arc<dyn sf_store::KvStore> = Arc::new(MemStore::new());
        let fabric = crate::fabric::Fabric::new(IntentStore::new(kv, Keys::new("/t")));
        tokio::spawn(fabric.clone().run());
        let users = auth::Users::default();
        let ttl = std::time::Duration::from_secs(60);
        let s = Rest::new(fabric.clone(), users, ttl, "lab", "", "Admin");
        let token = s.sessions.create("cs").await.unwrap();
        let app = router(s);
        let get = || {
            axum::http::Request::get("/api/tenants")
                .header(header::COOKIE, format!("{COOKIE}={token}"))
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let first = app.clone().oneshot(get()).await.unwrap();
        assert_eq!(
            first.status(),
            200,
            "the first call records the admin tenant"
        );
        let _writer = fabric.write_guard().await;
        let again = tokio::time::timeout(std::time::Duration::from_secs(3), app.oneshot(get()))
            .await
            .expect("answered while a write holds the lock")
            .unwrap();
        assert_eq!(again.status(), 200);
    }

    #[test]
    fn v1_delete_bodies() {
        assert_eq!(
            body_ids(&json!({"id": [3, "4"], "tenantsID": [1]})).unwrap(),
            vec![3, 4]
        );
        assert_eq!(body_ids(&json!({"id": 7})).unwrap(), vec![7]);
        assert_eq!(body_ids(&json!({"id": "8"})).unwrap(), vec![8]);
        assert!(body_ids(&json!({})).is_err());
        assert!(body_ids(&json!({"id": ["x"]})).is_err());
    }

    #[test]
    fn retries_match_by_content() {
        let a = Spec::Vnet(VnetSpec {
            vni: 1_500_001,
            gateway: "10.20.1.1/24".parse().unwrap(),
            state: "active".into(),
            tags: vec![],
            more_gateways: vec![],
            port_addrs: vec![],
        });
        assert!(same_content(&a, &a.clone()));
        let Spec::Vnet(mut b) = a.clone() else {
            unreachable!()
        };
        b.vni = 0;
        assert!(same_content(&a, &Spec::Vnet(b.clone())));
        // Port addresses are checked, not stored: a retry carrying them is the same create.
        let Spec::Vnet(mut c) = a.clone() else {
            unreachable!()
        };
        c.port_addrs = vec![PortAddr {
            field: "ports[0].ipv4".into(),
            addr: "10.20.1.11".parse().unwrap(),
        }];
        assert!(same_content(&a, &Spec::Vnet(c)));
        b.gateway = "10.20.2.1/24".parse().unwrap();
        assert!(!same_content(&a, &Spec::Vnet(b)));
    }
}
