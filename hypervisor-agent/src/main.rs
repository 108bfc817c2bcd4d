//! `sf-hypervisor-agent`: programs a KVM host's VXLAN/EVPN dataplane from its desired state.

use std::path::PathBuf;

use clap::Parser;
use sf_hypervisor_agent::dataplane::Hypervisor;
use sf_linux::frr::Frr;

#[derive(Parser, Debug)]
#[command(version, about = "StackFabric hypervisor agent")]
struct Args {
    #[command(flatten)]
    agent: sf_agent::AgentArgs,
    /// FRR vty socket directory of this host's FRR instance.
    #[arg(long, env = "SF_FRR_DIR", default_value = "/var/run/frr")]
    frr_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sf_agent::runtime::init_logging(&args.agent.log_format);
    let dp = Hypervisor::new(args.agent.node.clone(), Frr::new(args.frr_dir));
    sf_agent::run(args.agent, "hypervisor", dp).await
}
