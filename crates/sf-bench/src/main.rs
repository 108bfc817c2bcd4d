//! `sf-bench`: StackFabric's fleet-scale benchmarks, run by `deploy/bench.sh`.
//! Every figure is printed as `figure,value,baseline (what),ratio` with a baseline measured in
//! the same run; progress goes to stderr.

mod api;
mod fanout;
mod fleet;
mod pki;
mod procs;
mod scale;
mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    /// Directory holding the release binaries (sf-coordinator).
    #[arg(long, env = "SF_BENCH_BIN", default_value = "target/release")]
    bin_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fan-out to N simulated agents and coordinator restart under them.
    Fanout {
        /// Fleet sizes, ascending; the fleet grows from one to the next.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
        agents: Vec<usize>,
        /// Changes affecting every agent, per size.
        #[arg(long, default_value_t = 5)]
        samples_all: usize,
        /// Changes affecting one agent, per size.
        #[arg(long, default_value_t = 30)]
        samples_one: usize,
        /// Lease TTL of the simulated agents, seconds.
        #[arg(long, default_value_t = 30)]
        lease_ttl: i64,
        /// Keep the simulated agents' state directories on disk, under the run's directory,
        /// instead of on tmpfs (see `fleet::agent_state_root`).
        #[arg(long)]
        agent_state_on_disk: bool,
        /// Agents and coordinator ping idle Sync connections every 5 s and agents flush
        /// revision-only status after 3 s, as before issue 22 (the same-run baseline of
        /// `deploy/bench.sh --only fanout`); figure names get a `_legacy_liveness` suffix.
        #[arg(long)]
        legacy_liveness: bool,
    },
    /// Coordinator start-up and per-change cost with 1,000 vs 100,000 VPCs present.
    Scale {
        /// VPC counts, ascending (two tiers each).
        #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
        vpcs: Vec<usize>,
        /// Changes of each kind measured per size.
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
}

/// Raises this process's open-files limit to its hard limit: every simulated agent holds a
/// gRPC connection, an etcd connection and, while it writes, a file, so thousands of agents
/// pass the usual soft limit of 1,024; the coordinator and etcd, started from here, inherit
/// the raised limit and hold one socket per agent each. deploy/bench.sh raises `ulimit -n`
/// too; this covers a direct run.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                ..lim
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    eprintln!("open files limit: {}", lim.rlim_cur);
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        println!("figure,value,baseline,ratio");
        match cli.cmd {
            Cmd::Fanout {
                agents,
                samples_all,
                samples_one,
                lease_ttl,
                agent_state_on_disk,
                legacy_liveness,
            } => {
                fanout::run(fanout::FanoutArgs {
                    sizes: agents,
                    bin_dir: cli.bin_dir,
                    samples_all,
                    samples_one,
                    lease_ttl,
                    state_on_disk: agent_state_on_disk,
                    liveness: if legacy_liveness {
                        fleet::Liveness::LEGACY
                    } else {
                        fleet::Liveness::DEFAULT
                    },
                })
                .await
            }
            Cmd::Scale { vpcs, samples } => {
                scale::run(scale::ScaleArgs {
                    sizes: vpcs,
                    bin_dir: cli.bin_dir,
                    samples,
                })
                .await
            }
        }
    });
    // Simulated agents run detached; leave without waiting for them.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    for dir in procs::LEFT_TO_REMOVE.lock().unwrap().drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}
