#!/usr/bin/env bash
# deploy/bench.sh - StackFabric's benchmarks. Every figure is printed next to a baseline
# measured in the same run (figure,value,baseline,ratio), so numbers from a busy or slow
# machine still compare honestly. Figures are recorded in docs/PERFORMANCE.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

echo "# Maglev (issue 4): table build and disruption, baseline hash-mod-N and ideal 1/N"
cargo run --release --locked -q -p sf-core --example maglev_bench
