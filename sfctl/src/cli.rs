//! Command-line surface of `sfctl`: the clap derive types for global flags and every
//! subcommand. Nothing here talks to the network; `commands` turns these into RPCs.
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes, in `sfctl --help` and the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   the coordinator refused the request (invalid, conflicting, not permitted)
  2   no coordinator could be used (unreachable, not serving, timed out) or bad local
      configuration (CA or token file, config file)
  3   not found (the object, or the context named)
  4   --wait: not every live node applied the write within --wait-timeout
  64  usage error (unknown command or flag, bad value)";

/// Operator CLI for the StackFabric coordinator's FabricApi.
#[derive(Debug, Parser)]
#[command(name = "sfctl", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Connection, credential and output options shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Coordinator FabricApi endpoint (http:// or https://); several replicas as a comma
    /// separated list, tried in order: the first that accepts a connection (TCP and TLS within
    /// --timeout) is used; a read-only command also moves on when a replica fails mid-call.
    /// (Default: the context's endpoints, else https://127.0.0.1:7443.)
    #[arg(long, global = true, env = "SF_ENDPOINT")]
    pub endpoint: Option<String>,

    /// PEM file of the CA that signed the coordinator's certificate (required for https).
    #[arg(long, global = true, env = "SF_CA", value_name = "PEM")]
    pub ca: Option<std::path::PathBuf>,

    /// TLS server name to verify in the coordinator's certificate (default: the context's,
    /// else "coordinator").
    #[arg(long, global = true, env = "SF_SERVER_NAME")]
    pub server_name: Option<String>,

    /// File holding the bearer token (surrounding whitespace is ignored).
    #[arg(long, global = true, env = "SF_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,

    /// Bearer token; takes precedence over --token-file.
    #[arg(long, global = true, env = "SF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Tables without their header line (for scripts).
    #[arg(long, global = true)]
    pub no_headers: bool,

    /// Connect and per-request timeout, in seconds.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    pub timeout: u64,

    /// Writes: validate exactly as the write would be, change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Writes: return only once every live node (lease up) has applied the write: the fleet
    /// status comes from a replica at or past the write's revision and shows each live node
    /// in sync. Nodes whose lease is down are not waited for (named on stderr).
    #[arg(long, global = true)]
    pub wait: bool,

    /// How long --wait waits, in seconds (then exit code 4).
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS")]
    pub wait_timeout: u64,

    /// Config file with contexts (default: $XDG_CONFIG_HOME/sfctl/config.toml, else
    /// ~/.config/sfctl/config.toml).
    #[arg(long, global = true, env = "SF_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,

    /// Context of the config file to use (default: its current-context).
    #[arg(long, global = true, env = "SF_CONTEXT")]
    pub context: Option<String>,
}

/// Used when neither a flag, the environment nor a context names the endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7443";

impl GlobalOpts {
    /// The endpoint list as given, or the default.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT)
    }

    /// The TLS server name as given, or "coordinator".
    pub fn server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or("coordinator")
    }
}

/// How results are rendered on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned human-readable tables and one-line write confirmations.
    Table,
    /// JSON documents (arrays for lists, objects otherwise).
    Json,
    /// The same documents as YAML.
    Yaml,
    /// One `KIND/NAME` line per object (the object's kind as sfctl's subcommands name it).
    Name,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage VPCs.
    #[command(subcommand)]
    Vpc(VpcCmd),
    /// Manage networks (VPC tiers).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage port bindings.
    #[command(subcommand)]
    Port(PortCmd),
    /// Manage fabric nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage public IP pools.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Manage NAT rules of a VPC (source NAT, port forwarding, static NAT / Elastic IP).
    #[command(subcommand)]
    Nat(NatCmd),
    /// Manage static routes inside a VPC.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Manage network ACL lists (CloudStack semantics) attached to tiers.
    #[command(subcommand)]
    Acl(AclCmd),
    /// Manage L4 load balancers (Maglev across gateways, health-checked backends).
    #[command(subcommand)]
    Lb(LbCmd),
    /// Manage Direct Connects: a customer router on a switch port, eBGP with the VPC router.
    #[command(subcommand)]
    Dc(DcCmd),
    /// Gateway placement, drain and undrain.
    #[command(subcommand)]
    Gateway(GatewayCmd),
    /// Show fleet sync status (GetFleetStatus).
    Status {
        /// Keep showing it: print it again whenever it changes (Ctrl-C ends).
        #[arg(short, long)]
        watch: bool,
        /// Seconds between polls with --watch.
        #[arg(long, default_value_t = 2, value_name = "SECONDS")]
        interval: u64,
    },
    /// Show the nodes' underlay BGP sessions as their agents report them (GetFleetStatus).
    Bgp {
        /// Only this node's sessions.
        node: Option<String>,
    },
    /// Print a shell completion script (e.g. `sfctl completion bash > /etc/bash_completion.d/sfctl`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show or choose contexts of the config file (endpoint list, CA, token file).
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCmd {
    /// The contexts, the current one marked with `*`.
    GetContexts,
    /// The current context's name.
    CurrentContext,
    /// Make NAME the current context (rewrites the config file's current-context).
    UseContext { name: String },
}

impl Command {
    /// True for commands that only read (`status`, `list`, `show`): these may be sent again to
    /// another coordinator replica after a failure mid-call; a write is sent at most once.
    /// The match is exhaustive so that every new command has to be classified.
    pub fn is_read_only(&self) -> bool {
        match self {
            Command::Status { .. }
            | Command::Bgp { .. }
            | Command::Completion { .. }
            | Command::Config(_) => true,
            Command::Tenant(c) => matches!(c, TenantCmd::List | TenantCmd::Show { .. }),
            Command::Vpc(c) => matches!(c, VpcCmd::List { .. } | VpcCmd::Show { .. }),
            Command::Network(c) => {
                matches!(c, NetworkCmd::List { .. } | NetworkCmd::Show { .. })
            }
            Command::Port(c) => matches!(c, PortCmd::List { .. } | PortCmd::Show { .. }),
            Command::Node(c) => matches!(c, NodeCmd::List | NodeCmd::Show { .. }),
            Command::Pool(c) => matches!(c, PoolCmd::List | PoolCmd::Show { .. }),
            Command::Nat(c) => matches!(c, NatCmd::List { .. } | NatCmd::Show { .. }),
            Command::Route(c) => matches!(c, RouteCmd::List { .. } | RouteCmd::Show { .. }),
            Command::Acl(c) => matches!(c, AclCmd::List { .. } | AclCmd::Show { .. }),
            Command::Lb(c) => matches!(c, LbCmd::List { .. } | LbCmd::Show { .. }),
            Command::Dc(c) => matches!(c, DcCmd::List { .. } | DcCmd::Show { .. }),
            Command::Gateway(c) => matches!(c, GatewayCmd::List),
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum PoolCmd {
    /// Create a public IP pool.
    Create {
        name: String,
        /// IPv4 CIDR, e.g. 203.0.113.0/24.
        #[arg(long)]
        cidr: String,
        #[arg(long, default_value = "")]
        site: String,
    },
    /// List pools.
    #[command(visible_alias = "ls")]
    List,
    /// Show one pool.
    #[command(visible_alias = "get")]
    Show { name: String },
    /// Delete a pool (refused while NAT rules use it).
    Delete { name: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum NatCmd {
    /// Source NAT (port overloading) of a VPC to a public IP.
    Snat {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        public_ip: String,
    },
    /// Port forwarding: public IP, protocol, port -> VM IP and port.
    Forward {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        public_ip: String,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        #[arg(long)]
        public_port: u32,
        #[arg(long)]
        private_ip: String,
        #[arg(long)]
        private_port: u32,
    },
    /// Static NAT / Elastic IP: public IP <-> VM IP, both directions.
    Static {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        public_ip: String,
        #[arg(long)]
        private_ip: String,
    },
    /// List NAT rules.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        vpc: String,
    },
    /// Show one NAT rule.
    #[command(visible_alias = "get")]
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
    /// Delete a NAT rule.
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
    /// Change a NAT rule in place (UpdateNatRule): the options given replace the current
    /// values, the rule keeps its kind. Options its kind does not have are refused.
    Update {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        public_ip: Option<String>,
        #[arg(long)]
        protocol: Option<String>,
        #[arg(long)]
        public_port: Option<u32>,
        #[arg(long)]
        private_ip: Option<String>,
        #[arg(long)]
        private_port: Option<u32>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum RouteCmd {
    /// Create a static route inside a VPC.
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        nexthop: String,
    },
    /// List routes.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        vpc: String,
    },
    /// Show one route.
    #[command(visible_alias = "get")]
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
    /// Delete a route.
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
    /// Change a route's prefix or next hop in place (UpdateRoute).
    Update {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        nexthop: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum AclCmd {
    /// Create or replace an ACL list (a change applies as a delta: allowed flows survive).
    Apply {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        /// allow or deny when no rule matches.
        #[arg(long, default_value = "deny")]
        default: String,
        /// Tier (network) to attach the list to; repeat for several.
        #[arg(long = "tier")]
        tiers: Vec<String>,
        /// Rule "NUMBER DIRECTION ACTION PROTOCOL PORTS CIDRS", e.g.
        /// "10 ingress allow tcp 5432 10.10.1.0/24" or "20 ingress allow icmp 8/0 0.0.0.0/0";
        /// PORTS is a port, a range 1000-2000, TYPE/CODE for icmp and icmpv6, or "any".
        /// CIDRS may be IPv6 ("30 ingress allow tcp 80 fd40::/16,::/0"); a rule applies to a
        /// family through its networks of that family.
        #[arg(long = "rule")]
        rules: Vec<String>,
    },
    /// List ACL lists.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        vpc: String,
    },
    /// Show an ACL list with its rules.
    #[command(visible_alias = "get")]
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
    /// Delete an ACL list.
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum LbCmd {
    /// Create a load balancer.
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        /// VIP: from a public pool (an IPv6 pool for an IPv6 VIP), or a VPC-internal address outside every tier.
        #[arg(long)]
        vip: String,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        #[arg(long)]
        port: u32,
        /// Backend as IP:PORT or IP:PORT:WEIGHT ([IPv6]:PORT[:WEIGHT]); repeat for each backend.
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        /// Health check: none, tcp or http.
        #[arg(long, default_value = "tcp")]
        health: String,
        /// HTTP check path.
        #[arg(long, default_value = "/")]
        path: String,
        /// HTTP status the check expects.
        #[arg(long, default_value_t = 200)]
        expect_status: u32,
        #[arg(long, default_value_t = 2000)]
        interval_ms: u32,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u32,
        #[arg(long, default_value_t = 2)]
        rise: u32,
        #[arg(long, default_value_t = 3)]
        fall: u32,
        /// Maglev table size (prime, > 100 x backends).
        #[arg(long, default_value_t = 65537)]
        table_size: u32,
        /// Source allowed to reach the VIP (a CIDR of its family); repeat for each. None = everyone.
        #[arg(long = "source-cidr")]
        source_cidrs: Vec<String>,
    },
    /// List load balancers.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        vpc: String,
    },
    /// Show a load balancer with each backend's health and the table digest.
    #[command(visible_alias = "get")]
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
    /// Change a load balancer in place: the options given replace the current values, the
    /// others are kept.
    Update {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        /// The new backends, IP:PORT or IP:PORT:WEIGHT ([IPv6]:PORT[:WEIGHT]); repeat for each (replaces them all).
        #[arg(long = "backend")]
        backends: Vec<String>,
        /// Health check: none, tcp or http.
        #[arg(long)]
        health: Option<String>,
        /// HTTP check path.
        #[arg(long)]
        path: Option<String>,
        /// The new allowed sources (CIDRs of the VIP's family; replaces them all).
        #[arg(long = "source-cidr", conflicts_with = "any_source")]
        source_cidrs: Vec<String>,
        /// Allow every source again (clears the source CIDRs).
        #[arg(long)]
        any_source: bool,
    },
    /// Delete a load balancer.
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum GatewayCmd {
    /// Show which gateway serves each VPC (primary) and which takes over (standby).
    List,
    /// Move a gateway's VPCs away and keep it out of placement (before maintenance).
    Drain { node: String },
    /// Take a drained gateway back into placement.
    Undrain { node: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tenants.
    #[command(visible_alias = "ls")]
    List,
    /// Show one tenant.
    #[command(visible_alias = "get")]
    Show { name: String },
    /// Change a tenant's description.
    Update {
        name: String,
        #[arg(long)]
        description: String,
    },
    /// Delete a tenant.
    Delete { name: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum VpcCmd {
    /// Create a VPC.
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        /// IPv4 CIDR, e.g. 10.10.0.0/16.
        #[arg(long)]
        cidr: String,
        #[arg(long, default_value = "")]
        site: String,
        /// IPv6 range of a dual-stack VPC, e.g. 2001:db8:100::/56 (repeatable); tiers take
        /// their /64 from it.
        #[arg(long = "ipv6-range", value_name = "PREFIX")]
        ipv6_ranges: Vec<String>,
    },
    /// List VPCs.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
    },
    /// Show one VPC.
    #[command(visible_alias = "get")]
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Delete a VPC.
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum NetworkCmd {
    /// Create a network; prints the allocated VNI.
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        /// Tier subnet inside the VPC CIDR, e.g. 10.10.1.0/24.
        #[arg(long)]
        cidr: String,
        /// VXLAN VNI; omitted (or 0) allocates one from the pool.
        #[arg(long, default_value_t = 0)]
        vni: u32,
        /// Gateway address; omitted means the first host address.
        #[arg(long, default_value = "")]
        gateway: String,
        /// The tier's IPv6 /64 from the VPC's IPv6 ranges, e.g. 2001:db8:100:1::/64 (its ::1
        /// is the router); omitted = IPv4 only.
        #[arg(long = "ipv6-prefix", default_value = "", value_name = "PREFIX")]
        ipv6_prefix: String,
    },
    /// List networks.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        vpc: String,
    },
    /// Show one network.
    #[command(visible_alias = "get")]
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
    /// Delete a network.
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum PortCmd {
    /// Create a port binding.
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        network: String,
        /// Node hosting the port: a hypervisor (VM NIC) or a switch (bare-metal server).
        #[arg(long, value_name = "NODE")]
        node: String,
        #[arg(long)]
        ip: String,
        #[arg(long, default_value = "")]
        mac: String,
        /// Bare metal: the switch's server-facing interface joined to the network.
        #[arg(long, default_value = "")]
        interface: String,
        /// Bare metal: 802.1Q VLAN on --interface (omit for untagged).
        #[arg(long, default_value_t = 0)]
        vlan: u32,
        /// IPv6 address inside the network's IPv6 /64 (the VM's SLAAC address).
        #[arg(long, default_value = "")]
        ipv6: String,
    },
    /// List port bindings.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        vpc: String,
    },
    /// Show one port binding.
    #[command(visible_alias = "get")]
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Delete a port binding.
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum NodeCmd {
    /// Register a node.
    Create {
        name: String,
        #[arg(long, value_parser = ["hypervisor", "switch", "gateway"])]
        role: String,
        #[arg(long)]
        asn: u32,
        /// Loopback address (router-id / VTEP).
        #[arg(long, value_name = "IP")]
        loopback: String,
        /// Fabric-facing interface; repeat for several.
        #[arg(long = "fabric-port", value_name = "IF")]
        fabric_ports: Vec<String>,
        #[arg(long, default_value = "")]
        site: String,
    },
    /// List nodes.
    #[command(visible_alias = "ls")]
    List,
    /// Show one node.
    #[command(visible_alias = "get")]
    Show { name: String },
    /// Delete a node.
    Delete { name: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn only_status_list_and_show_are_read_only() {
        let parse = |args: &[&str]| {
            let mut v = vec!["sfctl"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).unwrap().command
        };
        for ro in [
            &["status"][..],
            &["tenant", "list"],
            &["vpc", "show", "v", "--tenant", "t"],
            &["node", "list"],
            &["acl", "show", "a", "--tenant", "t", "--vpc", "v"],
            &["gateway", "list"],
        ] {
            assert!(parse(ro).is_read_only(), "{ro:?} only reads");
        }
        for rw in [
            &["tenant", "create", "t"][..],
            &["tenant", "delete", "t"],
            &["gateway", "drain", "gw1"],
            &["pool", "create", "p", "--cidr", "203.0.113.0/24"],
            &["node", "delete", "hv1"],
        ] {
            assert!(!parse(rw).is_read_only(), "{rw:?} may write");
        }
    }

    #[test]
    fn parses_network_create_and_globals() {
        let cli = Cli::try_parse_from([
            "sfctl",
            "-o",
            "json",
            "network",
            "create",
            "web",
            "--tenant",
            "blue",
            "--vpc",
            "v1",
            "--cidr",
            "10.0.1.0/24",
            "--timeout",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.global.output, Output::Json);
        assert_eq!(cli.global.timeout, 3);
        match cli.command {
            Command::Network(NetworkCmd::Create {
                name, vni, gateway, ..
            }) => {
                assert_eq!(name, "web");
                assert_eq!(vni, 0);
                assert_eq!(gateway, "");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ipv6_flags_parse() {
        let cli = Cli::try_parse_from([
            "sfctl",
            "vpc",
            "create",
            "v1",
            "--tenant",
            "t",
            "--cidr",
            "10.0.0.0/16",
            "--ipv6-range",
            "2001:db8:1::/56",
            "--ipv6-range",
            "fd00:1::/48",
        ])
        .unwrap();
        match cli.command {
            Command::Vpc(VpcCmd::Create { ipv6_ranges, .. }) => {
                assert_eq!(ipv6_ranges, ["2001:db8:1::/56", "fd00:1::/48"])
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "sfctl",
            "network",
            "create",
            "web",
            "--tenant",
            "t",
            "--vpc",
            "v1",
            "--cidr",
            "10.0.1.0/24",
            "--ipv6-prefix",
            "2001:db8:1:1::/64",
        ])
        .unwrap();
        match cli.command {
            Command::Network(NetworkCmd::Create { ipv6_prefix, .. }) => {
                assert_eq!(ipv6_prefix, "2001:db8:1:1::/64")
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "sfctl",
            "port",
            "create",
            "p1",
            "--tenant",
            "t",
            "--vpc",
            "v1",
            "--network",
            "web",
            "--node",
            "hv1",
            "--ip",
            "10.0.1.5",
            "--ipv6",
            "2001:db8:1:1::5",
        ])
        .unwrap();
        match cli.command {
            Command::Port(PortCmd::Create { ipv6, .. }) => assert_eq!(ipv6, "2001:db8:1:1::5"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn node_create_repeats_fabric_port_and_checks_role() {
        let cli = Cli::try_parse_from([
            "sfctl",
            "node",
            "create",
            "leaf1",
            "--role",
            "switch",
            "--asn",
            "65001",
            "--loopback",
            "10.0.0.1",
            "--fabric-port",
            "swp1",
            "--fabric-port",
            "swp2",
        ])
        .unwrap();
        match cli.command {
            Command::Node(NodeCmd::Create { fabric_ports, .. }) => {
                assert_eq!(fabric_ports, vec!["swp1", "swp2"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from([
            "sfctl",
            "node",
            "create",
            "x",
            "--role",
            "router",
            "--asn",
            "1",
            "--loopback",
            "1.1.1.1",
        ])
        .is_err());
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum DcCmd {
    /// Create a Direct Connect: hand the switch port/VLAN into a VNI, peer eBGP from the VPC.
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
        /// Switch node and its server-facing interface where the customer's router is.
        #[arg(long)]
        switch: String,
        #[arg(long)]
        interface: String,
        /// 802.1Q VLAN on --interface (omit for untagged).
        #[arg(long, default_value_t = 0)]
        vlan: u32,
        /// The VPC router's address/prefix on the hand-off segment, e.g. 169.254.100.1/30.
        #[arg(long)]
        local_address: String,
        /// The customer router's address on the segment.
        #[arg(long)]
        peer_address: String,
        #[arg(long)]
        customer_asn: u32,
        /// The VPC side's ASN (default 64512).
        #[arg(long, default_value_t = 0)]
        local_asn: u32,
        /// Accepted customer prefix, "P", "P le N" or "P ge N le M"; repeat for several.
        #[arg(long = "accept")]
        accept: Vec<String>,
    },
    /// List Direct Connects with their BGP session state and prefix counts.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        vpc: String,
    },
    /// Show one Direct Connect.
    #[command(visible_alias = "get")]
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
    /// Delete a Direct Connect (tears down its session and routes).
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        vpc: String,
    },
}
