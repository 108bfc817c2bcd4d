//! Dispatch: maps each parsed subcommand to its FabricApi RPC, builds the request messages
//! (ObjectRef / ListRequest conventions per object kind), and prints the rendered result;
//! then, for a write under `--wait`, waits for the fleet to apply it, and for
//! `status --watch`, keeps polling. RPC failures surface as `tonic::Status` inside the
//! returned `anyhow::Error`.
use sf_proto::v1::nat_rule::Kind as NatKind;
use sf_proto::v1::{
    AclList, AclRule, Backend, DirectConnect, Empty, ListRequest, LoadBalancer, NatRule, Network,
    Node, ObjectRef, Pool, PortBinding, PortForward, Route, Snat, StaticNat, Tenant, Vpc,
    WriteResult,
};

use crate::cli::{
    AclCmd, Cli, Command, DcCmd, GatewayCmd, LbCmd, NatCmd, NetworkCmd, NodeCmd, PoolCmd, PortCmd,
    RouteCmd, TenantCmd, VpcCmd,
};
use crate::client::{self, Client};
use crate::output::{self, Fmt, Wrote};
use crate::wait;

/// What a command produced: text to print, and for a write the revision it committed (or,
/// for a dry run, `None`: there is nothing to wait for).
#[derive(Debug)]
pub enum Done {
    Read(String),
    Write { text: String, revision: Option<u64> },
}

impl Done {
    fn text(&self) -> &str {
        match self {
            Done::Read(t) | Done::Write { text: t, .. } => t,
        }
    }
}

/// Connects to the first coordinator replica that answers and runs the selected subcommand.
/// A read-only command that fails in transit (the replica hung or died mid-call) is sent to the
/// next replica; a write is never sent twice, because it may have been applied.
pub async fn run(mut cli: Cli) -> anyhow::Result<()> {
    if let Some(text) = crate::local::run(&cli)? {
        print!("{text}");
        return Ok(());
    }
    crate::config::apply(&mut cli.global).map_err(|e| client::SetupError(e.into()))?;
    let mut replicas = client::Replicas::new(&cli.global)?;
    let read_only = cli.command.is_read_only();
    loop {
        let (mut client, url) = replicas.connect_next().await?;
        match send(&mut client, &cli).await {
            Ok(done) => {
                print!("{}", done.text());
                return after(&mut client, &cli, done).await;
            }
            Err(e) => {
                let e = transport_failure(e, &url);
                if read_only && failed_in_transit(&e) {
                    replicas.record_failure(&url, &e);
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// What follows a command's first answer: `--wait` after a write, `status --watch`.
async fn after(client: &mut Client, cli: &Cli, done: Done) -> anyhow::Result<()> {
    match (&cli.command, done) {
        (
            Command::Status {
                watch: true,
                interval,
            },
            Done::Read(first),
        ) => {
            let every = std::time::Duration::from_secs((*interval).max(1));
            wait::watch_status(client, fmt_of(cli), every, first).await
        }
        (
            _,
            Done::Write {
                revision: Some(rev),
                ..
            },
        ) if cli.global.wait => {
            let limit = std::time::Duration::from_secs(cli.global.wait_timeout);
            wait::until_applied(client, rev, limit).await
        }
        _ => Ok(()),
    }
}

fn fmt_of(cli: &Cli) -> Fmt {
    Fmt {
        out: cli.global.output,
        headers: !cli.global.no_headers,
    }
}

/// Runs the command on one replica, sending a write again when it was refused as stale.
async fn send(client: &mut Client, cli: &Cli) -> anyhow::Result<Done> {
    let mut attempt = 0;
    loop {
        match dispatch(client, fmt_of(cli), cli.command.clone()).await {
            // Refused before anything was written: validate and send again.
            Err(e) if attempt < STALE_RETRIES && is_stale(&e) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            }
            r => return r,
        }
    }
}

/// The replica could not be used (connection lost, call timed out, replica not serving), as
/// opposed to an answer from a coordinator (rejected, not found).
fn failed_in_transit(err: &anyhow::Error) -> bool {
    if err.downcast_ref::<client::SetupError>().is_some() {
        return true;
    }
    err.downcast_ref::<tonic::Status>().is_some_and(|s| {
        matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        )
    })
}

/// Times a write refused as stale (it raced a write through another coordinator replica) is
/// sent again.
const STALE_RETRIES: u64 = 3;

/// The coordinator refused a write because intent changed through another replica after it
/// validated the request: nothing was written, so sending it again is safe.
fn is_stale(err: &anyhow::Error) -> bool {
    err.downcast_ref::<tonic::Status>().is_some_and(|s| {
        s.code() == tonic::Code::Aborted
            && s.message()
                .contains("intent changed through another coordinator")
    })
}

/// A `Status` carrying a source error was synthesized locally by tonic (connection reset,
/// timeout, h2 failure) rather than returned by the coordinator: report it as unreachable.
fn transport_failure(err: anyhow::Error, endpoint: &str) -> anyhow::Error {
    use std::error::Error as _;
    match err.downcast_ref::<tonic::Status>() {
        Some(status) if status.source().is_some() => {
            let msg = status.message().to_string();
            client::SetupError(
                anyhow::anyhow!(msg).context(format!("cannot reach coordinator at {endpoint}")),
            )
            .into()
        }
        _ => err,
    }
}

fn obj_ref(tenant: &str, vpc: &str, name: &str) -> ObjectRef {
    ObjectRef {
        tenant: tenant.to_string(),
        vpc: vpc.to_string(),
        name: name.to_string(),
    }
}

fn list_req(tenant: String, vpc: String) -> ListRequest {
    ListRequest { tenant, vpc }
}

/// Runs one command on one replica: each object kind has its own function below.
async fn dispatch(c: &mut Client, fmt: Fmt, cmd: Command) -> anyhow::Result<Done> {
    match cmd {
        Command::Tenant(cmd) => tenant(c, fmt, cmd).await,
        Command::Vpc(cmd) => vpc(c, fmt, cmd).await,
        Command::Network(cmd) => network(c, fmt, cmd).await,
        Command::Port(cmd) => port(c, fmt, cmd).await,
        Command::Node(cmd) => node(c, fmt, cmd).await,
        Command::Pool(cmd) => pool(c, fmt, cmd).await,
        Command::Nat(cmd) => nat(c, fmt, cmd).await,
        Command::Route(cmd) => route(c, fmt, cmd).await,
        Command::Acl(cmd) => acl(c, fmt, cmd).await,
        Command::Lb(cmd) => lb(c, fmt, cmd).await,
        Command::Dc(cmd) => dc(c, fmt, cmd).await,
        Command::Gateway(cmd) => gateway(c, fmt, cmd).await,
        Command::Status { .. } => status(c, fmt).await,
        Command::Bgp { node } => bgp(c, fmt, node.as_deref()).await,
        Command::Completion { .. } | Command::Config(_) => {
            unreachable!("local commands never reach a coordinator")
        }
    }
}

/// The confirmation of a write and the revision `--wait` waits for.
fn wrote(fmt: Fmt, verb: &str, kind: &str, name: &str, r: &WriteResult) -> Done {
    written(
        fmt,
        &Wrote {
            verb,
            kind,
            name,
            revision: r.revision,
            vni: None,
            dry_run: r.dry_run,
        },
    )
}

fn written(fmt: Fmt, w: &Wrote) -> Done {
    Done::Write {
        text: output::write_result(fmt, w),
        revision: (!w.dry_run).then_some(w.revision),
    }
}

fn created(fmt: Fmt, kind: &str, name: &str, r: &WriteResult) -> Done {
    wrote(fmt, "created", kind, name, r)
}

fn deleted(fmt: Fmt, kind: &str, name: &str, r: &WriteResult) -> Done {
    wrote(fmt, "deleted", kind, name, r)
}

async fn tenant(c: &mut Client, fmt: Fmt, cmd: TenantCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        TenantCmd::Create { name, description } => {
            let r = c
                .create_tenant(Tenant {
                    name: name.clone(),
                    description,
                })
                .await?
                .into_inner();
            created(fmt, "tenant", &name, &r)
        }
        TenantCmd::Update { name, description } => {
            let r = c
                .update_tenant(Tenant {
                    name: name.clone(),
                    description,
                })
                .await?
                .into_inner();
            wrote(fmt, "updated", "tenant", &name, &r)
        }
        TenantCmd::List => {
            let l = c.list_tenants(Empty {}).await?.into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        TenantCmd::Show { name } => {
            let t = c.get_tenant(obj_ref("", "", &name)).await?.into_inner();
            Done::Read(output::show(fmt, &t))
        }
        TenantCmd::Delete { name } => {
            let r = c.delete_tenant(obj_ref("", "", &name)).await?.into_inner();
            deleted(fmt, "tenant", &name, &r)
        }
    })
}

async fn vpc(c: &mut Client, fmt: Fmt, cmd: VpcCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        VpcCmd::Create {
            name,
            tenant,
            cidr,
            site,
            ipv6_ranges,
        } => {
            let r = c
                .create_vpc(Vpc {
                    tenant,
                    name: name.clone(),
                    cidr,
                    site,
                    ipv6_ranges,
                    ..Default::default()
                })
                .await?
                .into_inner();
            created(fmt, "vpc", &name, &r)
        }
        VpcCmd::List { tenant } => {
            let l = c
                .list_vpcs(list_req(tenant, String::new()))
                .await?
                .into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        VpcCmd::Show { name, tenant } => {
            let v = c.get_vpc(obj_ref(&tenant, "", &name)).await?.into_inner();
            Done::Read(output::show(fmt, &v))
        }
        VpcCmd::Delete { name, tenant } => {
            let r = c
                .delete_vpc(obj_ref(&tenant, "", &name))
                .await?
                .into_inner();
            deleted(fmt, "vpc", &name, &r)
        }
    })
}

async fn network(c: &mut Client, fmt: Fmt, cmd: NetworkCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        NetworkCmd::Create {
            name,
            tenant,
            vpc,
            cidr,
            vni,
            gateway,
            ipv6_prefix,
        } => {
            let r = c
                .create_network(Network {
                    tenant,
                    vpc,
                    name: name.clone(),
                    cidr,
                    vni,
                    gateway,
                    ipv6_prefix,
                })
                .await?
                .into_inner();
            // Fall back to the requested VNI if the coordinator omitted the echoed network.
            let vni = r.network.as_ref().map_or(vni, |n| n.vni);
            written(
                fmt,
                &Wrote {
                    verb: "created",
                    kind: "network",
                    name: &name,
                    revision: r.revision,
                    vni: Some(vni),
                    dry_run: r.dry_run,
                },
            )
        }
        NetworkCmd::List { tenant, vpc } => {
            let l = c.list_networks(list_req(tenant, vpc)).await?.into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        NetworkCmd::Show { name, tenant, vpc } => {
            let n = c
                .get_network(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            Done::Read(output::show(fmt, &n))
        }
        NetworkCmd::Delete { name, tenant, vpc } => {
            let r = c
                .delete_network(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            deleted(fmt, "network", &name, &r)
        }
    })
}

async fn port(c: &mut Client, fmt: Fmt, cmd: PortCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        PortCmd::Create {
            name,
            tenant,
            vpc,
            network,
            node,
            ip,
            mac,
            interface,
            vlan,
            ipv6,
        } => {
            let r = c
                .create_port_binding(PortBinding {
                    tenant,
                    name: name.clone(),
                    vpc,
                    network,
                    node,
                    ip,
                    mac,
                    interface,
                    vlan,
                    ipv6,
                })
                .await?
                .into_inner();
            created(fmt, "port", &name, &r)
        }
        PortCmd::List { tenant, vpc } => {
            let l = c
                .list_port_bindings(list_req(tenant, vpc))
                .await?
                .into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        PortCmd::Show { name, tenant } => {
            let p = c
                .get_port_binding(obj_ref(&tenant, "", &name))
                .await?
                .into_inner();
            Done::Read(output::show(fmt, &p))
        }
        PortCmd::Delete { name, tenant } => {
            let r = c
                .delete_port_binding(obj_ref(&tenant, "", &name))
                .await?
                .into_inner();
            deleted(fmt, "port", &name, &r)
        }
    })
}

async fn node(c: &mut Client, fmt: Fmt, cmd: NodeCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        NodeCmd::Create {
            name,
            role,
            asn,
            loopback,
            fabric_ports,
            site,
        } => {
            let r = c
                .create_node(Node {
                    name: name.clone(),
                    role,
                    site,
                    asn,
                    loopback,
                    fabric_ports,
                })
                .await?
                .into_inner();
            created(fmt, "node", &name, &r)
        }
        NodeCmd::List => {
            let l = c.list_nodes(Empty {}).await?.into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        NodeCmd::Show { name } => {
            let n = c.get_node(obj_ref("", "", &name)).await?.into_inner();
            Done::Read(output::show(fmt, &n))
        }
        NodeCmd::Delete { name } => {
            let r = c.delete_node(obj_ref("", "", &name)).await?.into_inner();
            deleted(fmt, "node", &name, &r)
        }
    })
}

async fn pool(c: &mut Client, fmt: Fmt, cmd: PoolCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        PoolCmd::Create { name, cidr, site } => {
            let r = c
                .create_pool(Pool {
                    name: name.clone(),
                    cidr,
                    site,
                })
                .await?
                .into_inner();
            created(fmt, "pool", &name, &r)
        }
        PoolCmd::List => {
            let l = c.list_pools(Empty {}).await?.into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        PoolCmd::Show { name } => {
            let p = c.get_pool(obj_ref("", "", &name)).await?.into_inner();
            Done::Read(output::show(fmt, &p))
        }
        PoolCmd::Delete { name } => {
            let r = c.delete_pool(obj_ref("", "", &name)).await?.into_inner();
            deleted(fmt, "pool", &name, &r)
        }
    })
}

async fn nat(c: &mut Client, fmt: Fmt, cmd: NatCmd) -> anyhow::Result<Done> {
    let rule = match cmd {
        NatCmd::List { tenant, vpc } => {
            let l = c.list_nat_rules(list_req(tenant, vpc)).await?.into_inner();
            return Ok(Done::Read(output::list(fmt, &l.items)));
        }
        NatCmd::Show { name, tenant, vpc } => {
            let r = c
                .get_nat_rule(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            return Ok(Done::Read(output::show(fmt, &r)));
        }
        NatCmd::Delete { name, tenant, vpc } => {
            let r = c
                .delete_nat_rule(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            return Ok(deleted(fmt, "NAT rule", &name, &r));
        }
        NatCmd::Update {
            name,
            tenant,
            vpc,
            public_ip,
            protocol,
            public_port,
            private_ip,
            private_port,
        } => {
            let mut rule = c
                .get_nat_rule(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            let change = NatChange {
                public_ip,
                protocol,
                public_port,
                private_ip,
                private_port,
            };
            change.apply(&mut rule)?;
            let r = c.update_nat_rule(rule).await?.into_inner();
            return Ok(wrote(fmt, "updated", "NAT rule", &name, &r));
        }
        NatCmd::Snat {
            name,
            tenant,
            vpc,
            public_ip,
        } => NatRule {
            tenant,
            vpc,
            name,
            kind: Some(NatKind::Snat(Snat { public_ip })),
        },
        NatCmd::Forward {
            name,
            tenant,
            vpc,
            public_ip,
            protocol,
            public_port,
            private_ip,
            private_port,
        } => NatRule {
            tenant,
            vpc,
            name,
            kind: Some(NatKind::PortForward(PortForward {
                public_ip,
                protocol,
                public_port,
                private_ip,
                private_port,
            })),
        },
        NatCmd::Static {
            name,
            tenant,
            vpc,
            public_ip,
            private_ip,
        } => NatRule {
            tenant,
            vpc,
            name,
            kind: Some(NatKind::StaticNat(StaticNat {
                public_ip,
                private_ip,
            })),
        },
    };
    let name = rule.name.clone();
    let r = c.create_nat_rule(rule).await?.into_inner();
    Ok(created(fmt, "NAT rule", &name, &r))
}

async fn route(c: &mut Client, fmt: Fmt, cmd: RouteCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        RouteCmd::Create {
            name,
            tenant,
            vpc,
            prefix,
            nexthop,
        } => {
            let r = c
                .create_route(Route {
                    tenant,
                    vpc,
                    name: name.clone(),
                    prefix,
                    nexthop,
                })
                .await?
                .into_inner();
            created(fmt, "route", &name, &r)
        }
        RouteCmd::List { tenant, vpc } => {
            let l = c.list_routes(list_req(tenant, vpc)).await?.into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        RouteCmd::Show { name, tenant, vpc } => {
            let r = c
                .get_route(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            Done::Read(output::show(fmt, &r))
        }
        RouteCmd::Delete { name, tenant, vpc } => {
            let r = c
                .delete_route(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            deleted(fmt, "route", &name, &r)
        }
        RouteCmd::Update {
            name,
            tenant,
            vpc,
            prefix,
            nexthop,
        } => {
            let mut route = c
                .get_route(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            route.prefix = prefix.unwrap_or(route.prefix);
            route.nexthop = nexthop.unwrap_or(route.nexthop);
            let r = c.update_route(route).await?.into_inner();
            wrote(fmt, "updated", "route", &name, &r)
        }
    })
}

/// The options of `sfctl nat update`: each given one replaces the rule's value.
struct NatChange {
    public_ip: Option<String>,
    protocol: Option<String>,
    public_port: Option<u32>,
    private_ip: Option<String>,
    private_port: Option<u32>,
}

impl NatChange {
    /// Applies the options to `rule`, refusing one its kind does not have (an SNAT rule has
    /// no private address): silently ignoring it would make the update look done.
    fn apply(self, rule: &mut NatRule) -> anyhow::Result<()> {
        let kind = rule
            .kind
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("NAT rule {:?} has no kind", rule.name))?;
        let set = |v: Option<String>, f: &mut String| {
            if let Some(v) = v {
                *f = v;
            }
        };
        let unused: Vec<&str> = match kind {
            NatKind::Snat(s) => {
                set(self.public_ip, &mut s.public_ip);
                [
                    ("--protocol", self.protocol.is_some()),
                    ("--public-port", self.public_port.is_some()),
                    ("--private-ip", self.private_ip.is_some()),
                    ("--private-port", self.private_port.is_some()),
                ]
                .into_iter()
                .filter_map(|(n, given)| given.then_some(n))
                .collect()
            }
            NatKind::StaticNat(s) => {
                set(self.public_ip, &mut s.public_ip);
                set(self.private_ip, &mut s.private_ip);
                [
                    ("--protocol", self.protocol.is_some()),
                    ("--public-port", self.public_port.is_some()),
                    ("--private-port", self.private_port.is_some()),
                ]
                .into_iter()
                .filter_map(|(n, given)| given.then_some(n))
                .collect()
            }
            NatKind::PortForward(p) => {
                set(self.public_ip, &mut p.public_ip);
                set(self.protocol, &mut p.protocol);
                set(self.private_ip, &mut p.private_ip);
                p.public_port = self.public_port.unwrap_or(p.public_port);
                p.private_port = self.private_port.unwrap_or(p.private_port);
                Vec::new()
            }
        };
        anyhow::ensure!(
            unused.is_empty(),
            "NAT rule {:?} has no {} (its kind has none)",
            rule.name,
            unused.join(", ")
        );
        Ok(())
    }
}

async fn acl(c: &mut Client, fmt: Fmt, cmd: AclCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        AclCmd::Apply {
            name,
            tenant,
            vpc,
            default,
            tiers,
            rules,
        } => {
            let rules = rules
                .iter()
                .map(|r| parse_acl_rule(r))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let r = c
                .apply_acl_list(AclList {
                    tenant,
                    vpc,
                    name: name.clone(),
                    default_action: default,
                    tiers,
                    rules,
                })
                .await?
                .into_inner();
            wrote(fmt, "applied", "ACL list", &name, &r)
        }
        AclCmd::List { tenant, vpc } => {
            let l = c.list_acl_lists(list_req(tenant, vpc)).await?.into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        AclCmd::Show { name, tenant, vpc } => {
            let l = c
                .get_acl_list(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            Done::Read(output::acl_detail(fmt, &l))
        }
        AclCmd::Delete { name, tenant, vpc } => {
            let r = c
                .delete_acl_list(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            deleted(fmt, "ACL list", &name, &r)
        }
    })
}

async fn lb(c: &mut Client, fmt: Fmt, cmd: LbCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        LbCmd::Create {
            name,
            tenant,
            vpc,
            vip,
            protocol,
            port,
            backends,
            health,
            path,
            expect_status,
            interval_ms,
            timeout_ms,
            rise,
            fall,
            table_size,
            source_cidrs,
        } => {
            let backends = backends
                .iter()
                .map(|b| parse_backend(b))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let r = c
                .create_load_balancer(LoadBalancer {
                    tenant,
                    vpc,
                    name: name.clone(),
                    vip,
                    protocol,
                    port,
                    backends,
                    health_type: health,
                    health_path: path,
                    health_expect_status: expect_status,
                    interval_ms,
                    timeout_ms,
                    rise,
                    fall,
                    table_size,
                    source_cidrs,
                    ..Default::default()
                })
                .await?
                .into_inner();
            created(fmt, "load balancer", &name, &r)
        }
        LbCmd::List { tenant, vpc } => {
            let l = c
                .list_load_balancers(list_req(tenant, vpc))
                .await?
                .into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        LbCmd::Show { name, tenant, vpc } => {
            let l = c
                .get_load_balancer(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            Done::Read(output::lb_detail(fmt, &l))
        }
        LbCmd::Update {
            name,
            tenant,
            vpc,
            backends,
            health,
            path,
            source_cidrs,
            any_source,
        } => {
            let mut l = c
                .get_load_balancer(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            if !backends.is_empty() {
                l.backends = backends
                    .iter()
                    .map(|b| parse_backend(b))
                    .collect::<anyhow::Result<Vec<_>>>()?;
            }
            if let Some(h) = health {
                l.health_type = h;
            }
            if let Some(p) = path {
                l.health_path = p;
            }
            if any_source {
                l.source_cidrs.clear();
            } else if !source_cidrs.is_empty() {
                l.source_cidrs = source_cidrs;
            }
            let r = c.update_load_balancer(l).await?.into_inner();
            wrote(fmt, "updated", "load balancer", &name, &r)
        }
        LbCmd::Delete { name, tenant, vpc } => {
            let r = c
                .delete_load_balancer(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            deleted(fmt, "load balancer", &name, &r)
        }
    })
}

async fn dc(c: &mut Client, fmt: Fmt, cmd: DcCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        DcCmd::Create {
            name,
            tenant,
            vpc,
            switch,
            interface,
            vlan,
            local_address,
            peer_address,
            customer_asn,
            local_asn,
            accept,
        } => {
            let r = c
                .create_direct_connect(DirectConnect {
                    tenant,
                    vpc,
                    name: name.clone(),
                    switch,
                    interface,
                    vlan,
                    local_address,
                    peer_address,
                    local_asn,
                    customer_asn,
                    accept,
                    ..Default::default()
                })
                .await?
                .into_inner();
            created(fmt, "Direct Connect", &name, &r)
        }
        DcCmd::List { tenant, vpc } => {
            let l = c
                .list_direct_connects(list_req(tenant, vpc))
                .await?
                .into_inner();
            Done::Read(output::list(fmt, &l.items))
        }
        DcCmd::Show { name, tenant, vpc } => {
            let d = c
                .get_direct_connect(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            Done::Read(output::show(fmt, &d))
        }
        DcCmd::Delete { name, tenant, vpc } => {
            let r = c
                .delete_direct_connect(obj_ref(&tenant, &vpc, &name))
                .await?
                .into_inner();
            deleted(fmt, "Direct Connect", &name, &r)
        }
    })
}

async fn gateway(c: &mut Client, fmt: Fmt, cmd: GatewayCmd) -> anyhow::Result<Done> {
    Ok(match cmd {
        GatewayCmd::List => {
            let l = c.list_placements(Empty {}).await?.into_inner();
            Done::Read(output::placements(fmt, &l))
        }
        GatewayCmd::Drain { node } => {
            let r = c.drain_gateway(obj_ref("", "", &node)).await?.into_inner();
            wrote(fmt, "drained", "gateway", &node, &r)
        }
        GatewayCmd::Undrain { node } => {
            let r = c
                .undrain_gateway(obj_ref("", "", &node))
                .await?
                .into_inner();
            wrote(fmt, "undrained", "gateway", &node, &r)
        }
    })
}

async fn status(c: &mut Client, fmt: Fmt) -> anyhow::Result<Done> {
    Ok({
        let s = c.get_fleet_status(Empty {}).await?.into_inner();
        Done::Read(output::fleet(fmt, &s))
    })
}

async fn bgp(c: &mut Client, fmt: Fmt, node: Option<&str>) -> anyhow::Result<Done> {
    let mut s = c.get_fleet_status(Empty {}).await?.into_inner();
    if let Some(n) = node {
        s.nodes.retain(|x| x.name == n);
        if s.nodes.is_empty() {
            return Err(tonic::Status::not_found(format!("node {n} has no status")).into());
        }
    }
    Ok(Done::Read(output::bgp_sessions(fmt, &s)))
}

/// Parses IP:PORT or IP:PORT:WEIGHT; an IPv6 address in brackets, as in a URL:
/// `[2001:db8::11]:80` or `[2001:db8::11]:80:5`.
fn parse_backend(s: &str) -> anyhow::Result<Backend> {
    let bad = || {
        anyhow::anyhow!("backend {s:?} must be IP:PORT or IP:PORT:WEIGHT ([IPv6]:PORT[:WEIGHT])")
    };
    let (ip, rest) = match s.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6.split_once(']').ok_or_else(bad)?;
            (ip, rest.strip_prefix(':').ok_or_else(bad)?)
        }
        None => s.split_once(':').ok_or_else(bad)?,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (port, weight) = match parts.as_slice() {
        [port] => (port, "1"),
        [port, w] => (port, *w),
        _ => return Err(bad()),
    };
    Ok(Backend {
        ip: ip.to_string(),
        port: port
            .parse()
            .map_err(|_| anyhow::anyhow!("backend {s:?}: bad port"))?,
        weight: weight
            .parse()
            .map_err(|_| anyhow::anyhow!("backend {s:?}: bad weight"))?,
        health: String::new(),
    })
}

#[cfg(test)]
mod backend_tests {
    #[test]
    fn backends_parse_with_optional_weight() {
        let b = super::parse_backend("10.10.1.11:80").unwrap();
        assert_eq!((b.ip.as_str(), b.port, b.weight), ("10.10.1.11", 80, 1));
        let w = super::parse_backend("10.10.1.12:8080:5").unwrap();
        assert_eq!((w.port, w.weight), (8080, 5));
        assert!(super::parse_backend("10.10.1.12").is_err());
        assert!(super::parse_backend("10.10.1.12:x").is_err());
        let v6 = super::parse_backend("[2001:db8:100:1::11]:80").unwrap();
        assert_eq!(
            (v6.ip.as_str(), v6.port, v6.weight),
            ("2001:db8:100:1::11", 80, 1)
        );
        let v6 = super::parse_backend("[2001:db8:100:1::11]:8080:3").unwrap();
        assert_eq!(
            (v6.ip.as_str(), v6.port, v6.weight),
            ("2001:db8:100:1::11", 8080, 3)
        );
        assert!(super::parse_backend("[2001:db8:100:1::11]").is_err());
        assert!(super::parse_backend("[2001:db8:100:1::11:80").is_err());
        assert!(super::parse_backend("2001:db8:100:1::11:80").is_err());
    }
}

/// Parses "NUMBER DIRECTION ACTION PROTOCOL PORTS CIDRS" (CIDRS comma separated).
fn parse_acl_rule(s: &str) -> anyhow::Result<AclRule> {
    let f: Vec<&str> = s.split_whitespace().collect();
    let [number, direction, action, protocol, ports, cidrs] = f.as_slice() else {
        anyhow::bail!("rule {s:?} must be \"NUMBER DIRECTION ACTION PROTOCOL PORTS CIDRS\"");
    };
    let number: u32 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("rule {s:?}: bad number"))?;
    let mut rule = AclRule {
        number,
        direction: direction.to_string(),
        action: action.to_string(),
        protocol: protocol.to_string(),
        icmp_type: -1,
        icmp_code: -1,
        cidrs: cidrs.split(',').map(str::to_string).collect(),
        ..Default::default()
    };
    if *ports != "any" {
        let bad = || anyhow::anyhow!("rule {s:?}: bad ports {ports:?}");
        if *protocol == "icmp" || *protocol == "icmpv6" {
            let (t, c) = ports.split_once('/').unwrap_or((ports, "-1"));
            rule.icmp_type = t.parse().map_err(|_| bad())?;
            rule.icmp_code = c.parse().map_err(|_| bad())?;
        } else {
            let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
            rule.port_start = a.parse().map_err(|_| bad())?;
            rule.port_end = b.parse().map_err(|_| bad())?;
        }
    }
    Ok(rule)
}

#[cfg(test)]
mod acl_rule_tests {
    #[test]
    fn rules_parse() {
        let r =
            super::parse_acl_rule("10 ingress allow tcp 5432 10.10.1.0/24,10.10.3.0/24").unwrap();
        assert_eq!(
            (r.number, r.port_start, r.port_end, r.cidrs.len()),
            (10, 5432, 5432, 2)
        );
        let r = super::parse_acl_rule("20 egress deny udp 1000-2000 0.0.0.0/0").unwrap();
        assert_eq!((r.port_start, r.port_end), (1000, 2000));
        let r = super::parse_acl_rule("30 ingress allow icmp 8/0 0.0.0.0/0").unwrap();
        assert_eq!((r.icmp_type, r.icmp_code, r.port_start), (8, 0, 0));
        let r = super::parse_acl_rule("35 ingress allow icmpv6 128 fd40::/16,::/0").unwrap();
        assert_eq!((r.icmp_type, r.icmp_code, r.cidrs.len()), (128, -1, 2));
        let r = super::parse_acl_rule("40 ingress allow all any 0.0.0.0/0").unwrap();
        assert_eq!((r.icmp_type, r.port_start), (-1, 0));
        assert!(super::parse_acl_rule("10 ingress allow tcp").is_err());
    }

    #[test]
    fn only_stale_refusals_are_sent_again() {
        let stale = anyhow::Error::from(tonic::Status::aborted(
            "intent changed through another coordinator since this request was validated; retry",
        ));
        assert!(super::is_stale(&stale));
        let conflict = anyhow::Error::from(tonic::Status::aborted("tenant demo already exists"));
        assert!(!super::is_stale(&conflict));
        let other = anyhow::Error::from(tonic::Status::unavailable(
            "intent changed through another coordinator",
        ));
        assert!(!super::is_stale(&other));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_in_transit_move_a_read_on() {
        let lost = transport_failure(
            tonic::Status::from_error(Box::new(std::io::Error::other("connection reset"))).into(),
            "https://a",
        );
        assert!(failed_in_transit(&lost));
        assert!(failed_in_transit(
            &tonic::Status::unavailable("not serving").into()
        ));
        assert!(failed_in_transit(
            &tonic::Status::deadline_exceeded("Timeout expired").into()
        ));
        assert!(!failed_in_transit(
            &tonic::Status::not_found("no such vpc").into()
        ));
        assert!(!failed_in_transit(
            &tonic::Status::invalid_argument("bad cidr").into()
        ));
    }
}

#[cfg(test)]
mod nat_change_tests {
    use super::*;

    fn change() -> NatChange {
        NatChange {
            public_ip: None,
            protocol: None,
            public_port: None,
            private_ip: None,
            private_port: None,
        }
    }

    fn rule(kind: NatKind) -> NatRule {
        NatRule {
            tenant: "demo".into(),
            vpc: "blue".into(),
            name: "r".into(),
            kind: Some(kind),
        }
    }

    #[test]
    fn only_the_options_given_replace_the_rules_values() {
        let mut r = rule(NatKind::PortForward(PortForward {
            public_ip: "203.0.113.40".into(),
            protocol: "tcp".into(),
            public_port: 8080,
            private_ip: "10.10.1.11".into(),
            private_port: 80,
        }));
        NatChange {
            private_ip: Some("10.10.1.12".into()),
            ..change()
        }
        .apply(&mut r)
        .unwrap();
        let Some(NatKind::PortForward(p)) = &r.kind else {
            panic!("kind changed: {r:?}")
        };
        assert_eq!(
            (
                p.public_ip.as_str(),
                p.public_port,
                p.private_ip.as_str(),
                p.private_port
            ),
            ("203.0.113.40", 8080, "10.10.1.12", 80)
        );
    }

    #[test]
    fn an_option_the_kind_lacks_is_refused() {
        let mut r = rule(NatKind::Snat(Snat {
            public_ip: "203.0.113.40".into(),
        }));
        let e = NatChange {
            private_ip: Some("10.10.1.12".into()),
            ..change()
        }
        .apply(&mut r)
        .unwrap_err();
        assert!(e.to_string().contains("--private-ip"), "{e}");
        NatChange {
            public_ip: Some("203.0.113.41".into()),
            ..change()
        }
        .apply(&mut r)
        .unwrap();
        assert!(matches!(&r.kind, Some(NatKind::Snat(s)) if s.public_ip == "203.0.113.41"));
    }
}
