//! The tfplugin6 `Provider` service: schemas, planning (what is replaced, what is unknown until
//! apply), apply/read/import through `fabric`, and server errors as attribute diagnostics.
use std::sync::Arc;

use tokio::sync::RwLock;
use tonic::{Request, Response, Status};

use crate::fabric::{self, Client, Obj};
use crate::msgpack::{self, Value};
use crate::schema::{self, Def, Mode};
use crate::tf;

#[derive(Default, Clone)]
pub struct StackFabric {
    client: Arc<RwLock<Option<Client>>>,
}

fn decode(v: &Option<tf::DynamicValue>) -> Result<Value, Status> {
    match v {
        Some(d) if !d.msgpack.is_empty() => msgpack::decode(&d.msgpack)
            .map_err(|e| Status::invalid_argument(format!("bad msgpack value: {e}"))),
        Some(d) if !d.json.is_empty() => {
            let j: serde_json::Value = serde_json::from_slice(&d.json)
                .map_err(|e| Status::invalid_argument(format!("bad json value: {e}")))?;
            Ok(Value::from_json(&j))
        }
        _ => Ok(Value::Null),
    }
}

fn dyn_value(v: &Value) -> Option<tf::DynamicValue> {
    Some(tf::DynamicValue {
        msgpack: msgpack::encode(v),
        json: vec![],
    })
}

fn obj_of(v: Value) -> Option<Obj> {
    match v {
        Value::Map(m) => Some(m),
        _ => None,
    }
}

fn error(summary: impl Into<String>, detail: impl Into<String>) -> tf::Diagnostic {
    tf::Diagnostic {
        severity: tf::diagnostic::Severity::Error as i32,
        summary: summary.into(),
        detail: detail.into(),
        attribute: None,
    }
}

fn attr_path(name: &str) -> tf::AttributePath {
    path_of(&[Step::Attr(name.to_string())])
}

/// One step of a path into a resource's value: an attribute or a list element.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Attr(String),
    Index(i64),
}

fn path_of(steps: &[Step]) -> tf::AttributePath {
    use tf::attribute_path::step::Selector;
    tf::AttributePath {
        steps: steps
            .iter()
            .map(|s| tf::attribute_path::Step {
                selector: Some(match s {
                    Step::Attr(a) => Selector::AttributeName(a.clone()),
                    Step::Index(i) => Selector::ElementKeyInt(*i),
                }),
            })
            .collect(),
    }
}

/// "backends[2]" as ("backends", Some(2)); '-' in names reads as '_'.
fn segment(seg: &str) -> (String, Option<i64>) {
    let (name, idx) = match seg.split_once('[') {
        Some((n, rest)) => (n, rest.trim_end_matches(']').parse().ok()),
        None => (seg, None),
    };
    (name.replace('-', "_"), idx)
}

/// The path of the attribute a server field names ("lb.backends[0].ip" is element 0 of the
/// `backend` blocks, its `ip`; "dc.accept[1]" is element 1 of `accept`), or None.
fn field_path(def: &Def, field: &str) -> Option<Vec<Step>> {
    let rest = field.split_once('.').map_or(field, |(_, r)| r);
    if let Some((_, a)) = def.aliases.iter().find(|(f, _)| *f == rest) {
        return Some(vec![Step::Attr(a.to_string())]);
    }
    let mut segs = rest.split('.');
    let (first, idx) = segment(segs.next()?);
    let mut steps = vec![];
    if def.attr(&first).is_some() {
        steps.push(Step::Attr(first));
        steps.extend(idx.map(Step::Index));
        return Some(steps);
    }
    let b = def
        .blocks
        .iter()
        .find(|b| b.name == first || format!("{}s", b.name) == first)?;
    steps.push(Step::Attr(b.name.to_string()));
    if let Some(i) = idx {
        steps.push(Step::Index(i));
        if let Some((inner, _)) = segs.next().map(segment) {
            if b.attrs.iter().any(|a| a.name == inner) {
                steps.push(Step::Attr(inner));
            }
        }
    }
    Some(steps)
}

/// The coordinator names the offending field first ("invalid nat.public_ip: ..."); when that
/// field is an attribute (or block element) of the resource, the diagnostic points at it.
fn offending_attr(def: &Def, msg: &str) -> Option<Vec<Step>> {
    let rest = msg.strip_prefix("invalid ")?;
    let field = rest.split(':').next()?.trim();
    if let Some(p) = field_path(def, field) {
        return Some(p);
    }
    // Fields nested deeper than the resource ("nat.kind.public_ip"): the last name.
    let (last, _) = segment(field.rsplit('.').next()?);
    def.attr(&last).map(|_| vec![Step::Attr(last)])
}

fn server_diag(def: &Def, what: &str, id: &str, e: &Status) -> tf::Diagnostic {
    let mut d = error(
        e.message().to_string(),
        format!(
            "The StackFabric coordinator refused to {what} {} \"{id}\" ({:?}): {}",
            def.type_name,
            e.code(),
            e.message()
        ),
    );
    d.attribute = offending_attr(def, e.message()).map(|p| path_of(&p));
    d
}

fn find(defs: Vec<Def>, ty: &str) -> Result<Def, Status> {
    defs.into_iter()
        .find(|d| d.type_name == ty)
        .ok_or_else(|| Status::not_found(format!("unknown type {ty}")))
}

fn key_id(def: &Def, o: &Obj) -> String {
    def.key
        .iter()
        .map(|k| {
            o.get(*k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Gives the object exactly the schema's attributes and blocks (missing ones null / empty)
/// and sets `id`.
fn shape(def: &Def, mut o: Obj) -> Obj {
    let mut out = Obj::new();
    for a in &def.attrs {
        out.insert(a.name.to_string(), o.remove(a.name).unwrap_or(Value::Null));
    }
    for b in &def.blocks {
        let v = match o.remove(b.name) {
            Some(v @ Value::List(_)) => v,
            _ => Value::List(vec![]),
        };
        out.insert(b.name.to_string(), v);
    }
    if def.attr("id").is_some() {
        let id = key_id(def, &out);
        out.insert("id".into(), Value::Str(id));
    }
    out
}

/// Block attributes left out of the configuration plan as the API's default (a backend's
/// weight 1), so a value set outside Terraform shows as a change rather than being kept.
fn fill_block_defaults(def: &Def, planned: &mut Obj, config: &Obj) {
    for b in &def.blocks {
        let (Some(Value::List(items)), Some(Value::List(cfg))) =
            (planned.get_mut(b.name), config.get(b.name))
        else {
            continue;
        };
        for (item, c) in items.iter_mut().zip(cfg) {
            let (Value::Map(item), Value::Map(c)) = (item, c) else {
                continue;
            };
            for a in &b.attrs {
                if let Some(d) = a.default {
                    if c.get(a.name).is_none_or(Value::is_null) {
                        item.insert(a.name.to_string(), Value::Int(d));
                    }
                }
            }
        }
    }
}

fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Int(x)), Some(Value::Float(y)))
        | (Some(Value::Float(y)), Some(Value::Int(x))) => (*x as f64) == *y,
        (Some(Value::List(x)), Some(Value::List(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(Some(p), Some(q)))
        }
        (Some(Value::Map(x)), Some(Value::Map(y))) => {
            x.len() == y.len() && x.iter().all(|(k, v)| same(Some(v), y.get(k)))
        }
        (None, Some(Value::Null)) | (Some(Value::Null), None) => true,
        _ => a == b,
    }
}

impl StackFabric {
    async fn client(&self) -> Result<Client, tf::Diagnostic> {
        self.client.read().await.clone().ok_or_else(|| {
            error(
                "provider not configured",
                "ConfigureProvider did not connect to the coordinator",
            )
        })
    }
}

#[tonic::async_trait]
impl tf::provider_server::Provider for StackFabric {
    async fn get_metadata(
        &self,
        _: Request<tf::get_metadata::Request>,
    ) -> Result<Response<tf::get_metadata::Response>, Status> {
        Ok(Response::new(tf::get_metadata::Response {
            server_capabilities: Some(tf::ServerCapabilities::default()),
            resources: schema::resources()
                .iter()
                .map(|d| tf::get_metadata::ResourceMetadata {
                    type_name: d.type_name.into(),
                })
                .collect(),
            data_sources: schema::data_sources()
                .iter()
                .map(|d| tf::get_metadata::DataSourceMetadata {
                    type_name: d.type_name.into(),
                })
                .collect(),
            ..Default::default()
        }))
    }

    async fn get_provider_schema(
        &self,
        _: Request<tf::get_provider_schema::Request>,
    ) -> Result<Response<tf::get_provider_schema::Response>, Status> {
        Ok(Response::new(tf::get_provider_schema::Response {
            provider: Some(schema::to_tf_schema(&schema::provider(), true)),
            resource_schemas: schema::resources()
                .iter()
                .map(|d| (d.type_name.to_string(), schema::to_tf_schema(d, false)))
                .collect(),
            data_source_schemas: schema::data_sources()
                .iter()
                .map(|d| (d.type_name.to_string(), schema::to_tf_schema(d, false)))
                .collect(),
            server_capabilities: Some(tf::ServerCapabilities::default()),
            ..Default::default()
        }))
    }

    async fn validate_provider_config(
        &self,
        _: Request<tf::validate_provider_config::Request>,
    ) -> Result<Response<tf::validate_provider_config::Response>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn validate_resource_config(
        &self,
        _: Request<tf::validate_resource_config::Request>,
    ) -> Result<Response<tf::validate_resource_config::Response>, Status> {
        // Values are validated by the coordinator when they are written (no dry-run call).
        Ok(Response::new(Default::default()))
    }

    async fn validate_data_resource_config(
        &self,
        _: Request<tf::validate_data_resource_config::Request>,
    ) -> Result<Response<tf::validate_data_resource_config::Response>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<tf::upgrade_resource_state::Request>,
    ) -> Result<Response<tf::upgrade_resource_state::Response>, Status> {
        let req = req.into_inner();
        let def = find(schema::resources(), &req.type_name)?;
        let raw = req.raw_state.map(|r| r.json).unwrap_or_default();
        let j: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| Status::invalid_argument(format!("bad stored state: {e}")))?;
        let o = obj_of(Value::from_json(&j)).unwrap_or_default();
        Ok(Response::new(tf::upgrade_resource_state::Response {
            upgraded_state: dyn_value(&Value::Map(shape(&def, o))),
            diagnostics: vec![],
        }))
    }

    async fn configure_provider(
        &self,
        req: Request<tf::configure_provider::Request>,
    ) -> Result<Response<tf::configure_provider::Response>, Status> {
        let cfg = obj_of(decode(&req.into_inner().config)?).unwrap_or_default();
        let settings = fabric::Settings::from_config(&cfg);
        let mut diagnostics = vec![];
        match fabric::connect(&settings).await {
            Ok(c) => *self.client.write().await = Some(c),
            Err(e) => diagnostics.push(error(
                "cannot connect to the StackFabric coordinator",
                format!("{e:#}"),
            )),
        }
        Ok(Response::new(tf::configure_provider::Response {
            diagnostics,
        }))
    }

    async fn read_resource(
        &self,
        req: Request<tf::read_resource::Request>,
    ) -> Result<Response<tf::read_resource::Response>, Status> {
        let req = req.into_inner();
        let def = find(schema::resources(), &req.type_name)?;
        let cur = decode(&req.current_state)?;
        let mut resp = tf::read_resource::Response {
            private: req.private,
            ..Default::default()
        };
        let Some(cur) = obj_of(cur) else {
            resp.new_state = dyn_value(&Value::Null);
            return Ok(Response::new(resp));
        };
        let mut c = match self.client().await {
            Ok(c) => c,
            Err(d) => {
                resp.diagnostics.push(d);
                return Ok(Response::new(resp));
            }
        };
        match fabric::read(&mut c, def.type_name, &cur).await {
            Ok(Some(o)) => resp.new_state = dyn_value(&Value::Map(shape(&def, o))),
            // Deleted outside Terraform: drop it from state so the next plan creates it.
            Ok(None) => resp.new_state = dyn_value(&Value::Null),
            Err(e) => {
                resp.new_state = dyn_value(&Value::Map(cur.clone()));
                resp.diagnostics
                    .push(server_diag(&def, "read", &key_id(&def, &cur), &e));
            }
        }
        Ok(Response::new(resp))
    }

    async fn plan_resource_change(
        &self,
        req: Request<tf::plan_resource_change::Request>,
    ) -> Result<Response<tf::plan_resource_change::Response>, Status> {
        let req = req.into_inner();
        let def = find(schema::resources(), &req.type_name)?;
        let prior = obj_of(decode(&req.prior_state)?);
        let proposed = decode(&req.proposed_new_state)?;
        let config = obj_of(decode(&req.config)?).unwrap_or_default();
        let mut resp = tf::plan_resource_change::Response {
            planned_private: req.prior_private,
            ..Default::default()
        };
        let Some(mut planned) = obj_of(proposed.clone()) else {
            resp.planned_state = dyn_value(&proposed);
            return Ok(Response::new(resp));
        };
        fill_block_defaults(&def, &mut planned, &config);
        let null = Value::Null;
        let cfg_null = |k: &str| config.get(k).unwrap_or(&null).is_null();
        match &prior {
            None => {
                for a in &def.attrs {
                    if a.mode != Mode::Required && cfg_null(a.name) {
                        planned.insert(a.name.into(), Value::Unknown);
                    }
                }
            }
            Some(prior) => {
                let mut replace = false;
                for a in def.attrs.iter().filter(|a| a.mode != Mode::Computed) {
                    if !same(planned.get(a.name), prior.get(a.name)) && a.force_new {
                        replace = true;
                        resp.requires_replace.push(attr_path(a.name));
                    }
                }
                for b in &def.blocks {
                    if !same(planned.get(b.name), prior.get(b.name)) && b.force_new {
                        replace = true;
                        resp.requires_replace.push(attr_path(b.name));
                    }
                }
                if replace {
                    // The new object gets fresh coordinator-set values.
                    for a in &def.attrs {
                        let fresh = a.mode == Mode::Computed
                            || (a.mode == Mode::Optional && cfg_null(a.name));
                        if fresh && a.name != "id" {
                            planned.insert(a.name.into(), Value::Unknown);
                        }
                    }
                    let id_changes = def
                        .key
                        .iter()
                        .any(|k| !same(planned.get(*k), prior.get(*k)));
                    if id_changes {
                        planned.insert("id".into(), Value::Unknown);
                    }
                }
            }
        }
        resp.planned_state = dyn_value(&Value::Map(planned));
        Ok(Response::new(resp))
    }

    async fn apply_resource_change(
        &self,
        req: Request<tf::apply_resource_change::Request>,
    ) -> Result<Response<tf::apply_resource_change::Response>, Status> {
        let req = req.into_inner();
        let def = find(schema::resources(), &req.type_name)?;
        let prior = obj_of(decode(&req.prior_state)?);
        let planned = obj_of(decode(&req.planned_state)?);
        let mut resp = tf::apply_resource_change::Response {
            private: req.planned_private,
            ..Default::default()
        };
        let mut c = match self.client().await {
            Ok(c) => c,
            Err(d) => {
                resp.diagnostics.push(d);
                resp.new_state = dyn_value(&prior.map(Value::Map).unwrap_or(Value::Null));
                return Ok(Response::new(resp));
            }
        };
        let ty = def.type_name;
        match (prior, planned) {
            (Some(prior), None) => {
                if let Err(e) = fabric::delete(&mut c, ty, &prior).await {
                    resp.diagnostics
                        .push(server_diag(&def, "delete", &key_id(&def, &prior), &e));
                    resp.new_state = dyn_value(&Value::Map(prior));
                } else {
                    resp.new_state = dyn_value(&Value::Null);
                }
            }
            (prior, Some(planned)) => {
                let id = key_id(&def, &planned);
                let (what, r) = match &prior {
                    None => ("create", fabric::create(&mut c, ty, &planned).await),
                    Some(_) => ("update", fabric::update(&mut c, ty, &planned).await),
                };
                if let Err(e) = r {
                    resp.diagnostics.push(server_diag(&def, what, &id, &e));
                    // Nothing was written: the state stays as it was.
                    resp.new_state = dyn_value(&prior.map(Value::Map).unwrap_or(Value::Null));
                    return Ok(Response::new(resp));
                }
                match fabric::read_settled(&mut c, ty, &planned).await {
                    Ok(Some(o)) => resp.new_state = dyn_value(&Value::Map(shape(&def, o))),
                    Ok(None) => {
                        resp.diagnostics.push(error(
                            format!("{ty} \"{id}\" was written but cannot be read back"),
                            "The coordinator accepted the write, but the object is not listed.",
                        ));
                        resp.new_state = dyn_value(&Value::Null);
                    }
                    Err(e) => {
                        resp.diagnostics.push(server_diag(&def, "read", &id, &e));
                        let mut p = planned.clone();
                        for v in p.values_mut() {
                            if *v == Value::Unknown {
                                *v = Value::Null;
                            }
                        }
                        resp.new_state = dyn_value(&Value::Map(p));
                    }
                }
            }
            (None, None) => resp.new_state = dyn_value(&Value::Null),
        }
        Ok(Response::new(resp))
    }

    async fn import_resource_state(
        &self,
        req: Request<tf::import_resource_state::Request>,
    ) -> Result<Response<tf::import_resource_state::Response>, Status> {
        let req = req.into_inner();
        let def = find(schema::resources(), &req.type_name)?;
        let parts: Vec<&str> = req.id.split('/').collect();
        let mut resp = tf::import_resource_state::Response::default();
        if parts.len() != def.key.len() || parts.iter().any(|p| p.is_empty()) {
            resp.diagnostics.push(error(
                format!("invalid import ID {:?}", req.id),
                format!(
                    "{} is imported by \"{}\"",
                    def.type_name,
                    def.import_format()
                ),
            ));
            return Ok(Response::new(resp));
        }
        let mut o = Obj::new();
        for (k, p) in def.key.iter().zip(parts) {
            o.insert(k.to_string(), Value::Str(p.to_string()));
        }
        // Fail here, not in the following read, when the object does not exist.
        let mut c = match self.client().await {
            Ok(c) => c,
            Err(d) => {
                resp.diagnostics.push(d);
                return Ok(Response::new(resp));
            }
        };
        match fabric::read(&mut c, def.type_name, &o).await {
            Ok(Some(full)) => {
                resp.imported_resources
                    .push(tf::import_resource_state::ImportedResource {
                        type_name: def.type_name.into(),
                        state: dyn_value(&Value::Map(shape(&def, full))),
                        ..Default::default()
                    })
            }
            Ok(None) => resp.diagnostics.push(error(
                format!("{} \"{}\" does not exist", def.type_name, req.id),
                "Nothing to import: the coordinator has no such object.",
            )),
            Err(e) => resp
                .diagnostics
                .push(server_diag(&def, "read", &req.id, &e)),
        }
        Ok(Response::new(resp))
    }

    async fn read_data_source(
        &self,
        req: Request<tf::read_data_source::Request>,
    ) -> Result<Response<tf::read_data_source::Response>, Status> {
        let req = req.into_inner();
        let def = find(schema::data_sources(), &req.type_name)?;
        let cfg = obj_of(decode(&req.config)?).unwrap_or_default();
        let mut resp = tf::read_data_source::Response::default();
        let mut c = match self.client().await {
            Ok(c) => c,
            Err(d) => {
                resp.diagnostics.push(d);
                return Ok(Response::new(resp));
            }
        };
        match fabric::read_data(&mut c, def.type_name, &cfg).await {
            Ok(o) => resp.state = dyn_value(&Value::Map(shape(&def, o))),
            Err(e) => resp.diagnostics.push(server_diag(&def, "read", "", &e)),
        }
        Ok(Response::new(resp))
    }

    async fn stop_provider(
        &self,
        _: Request<tf::stop_provider::Request>,
    ) -> Result<Response<tf::stop_provider::Response>, Status> {
        Ok(Response::new(Default::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(ty: &str) -> Def {
        find(schema::resources(), ty).expect("known type")
    }

    #[test]
    fn a_backend_field_points_into_its_block_element() {
        let d = def("stackfabric_load_balancer");
        let p = offending_attr(
            &d,
            "invalid lb.backends[1].ip: 10.9.9.9 is not a host address",
        );
        assert_eq!(
            p,
            Some(vec![
                Step::Attr("backend".into()),
                Step::Index(1),
                Step::Attr("ip".into())
            ])
        );
        let p = offending_attr(&d, "invalid lb.port: 0 is not a port (1-65535)");
        assert_eq!(p, Some(vec![Step::Attr("port".into())]));
        let p = offending_attr(&d, "invalid lb.health.type: \"x\" is not none, tcp or http");
        assert_eq!(p, Some(vec![Step::Attr("health_type".into())]));
    }

    #[test]
    fn list_elements_aliases_and_old_fields_resolve() {
        let dc = def("stackfabric_direct_connect");
        assert_eq!(
            offending_attr(&dc, "invalid dc.accept[2]: not a prefix"),
            Some(vec![Step::Attr("accept".into()), Step::Index(2)])
        );
        let drain = def("stackfabric_gateway_drain");
        assert_eq!(
            offending_attr(
                &drain,
                "invalid node.name: \"leaf1\" is a switch, not a gateway"
            ),
            Some(vec![Step::Attr("gateway".into())])
        );
        let net = def("stackfabric_network");
        assert_eq!(
            offending_attr(&net, "invalid network.cidr: outside the VPC"),
            Some(vec![Step::Attr("cidr".into())])
        );
        assert_eq!(offending_attr(&net, "node \"x\" not found"), None);
    }

    #[test]
    fn a_left_out_backend_weight_plans_as_the_api_default() {
        let d = def("stackfabric_load_balancer");
        let backend = |w: Value| {
            let mut m = Obj::new();
            m.insert("ip".into(), Value::Str("10.0.0.1".into()));
            m.insert("port".into(), Value::Int(80));
            m.insert("weight".into(), w);
            Value::Map(m)
        };
        let mut planned = Obj::new();
        planned.insert(
            "backend".into(),
            Value::List(vec![backend(Value::Int(5)), backend(Value::Int(7))]),
        );
        let mut config = Obj::new();
        config.insert(
            "backend".into(),
            Value::List(vec![backend(Value::Null), backend(Value::Int(7))]),
        );
        fill_block_defaults(&d, &mut planned, &config);
        assert_eq!(
            planned.get("backend"),
            Some(&Value::List(vec![
                backend(Value::Int(1)),
                backend(Value::Int(7))
            ]))
        );
    }
}
