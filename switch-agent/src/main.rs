//! `sf-switch-agent`: programs a leaf/spine switch (Linux with FRR) from its desired state.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sf_linux::frr::Frr;
use sf_switch_agent::Switch;

#[derive(Parser, Debug)]
#[command(version, about = "StackFabric switch agent")]
struct Args {
    #[command(flatten)]
    agent: sf_agent::AgentArgs,
    /// FRR vty socket directory of this switch's FRR instance.
    #[arg(long, env = "SF_FRR_DIR", default_value = "/var/run/frr")]
    frr_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sf_agent::runtime::init_logging(&args.agent.log_format);
    let dp = Switch::new(args.agent.node.clone(), Frr::new(args.frr_dir))
        .context("opening the switch's netlink socket")?;
    sf_agent::run(args.agent, "switch", dp).await
}
