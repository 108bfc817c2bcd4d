#!/usr/bin/env bash
# deploy/monitoring/check.sh - checks the monitoring files with promtool (Debian package
# `prometheus`, installed by deploy/deps.sh): the alert rules' syntax, their unit tests, the
# example scrape configuration, and every PromQL expression of the Grafana dashboard (each
# is checked as a recording rule, so a typo fails here instead of showing an empty panel).
set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
cd "$DIR"
TMP=$(mktemp -d /tmp/sf-monitoring.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

promtool check rules alerts.yml
promtool test rules alerts_test.yml
promtool check config prometheus.example.yml

python3 - grafana-dashboard.json >"$TMP/dashboard-rules.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert exprs, "the dashboard has no queries"
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    print(f"      - record: dashboard:panel_{i}\n        expr: {json.dumps(e)}")
PY
promtool check rules "$TMP/dashboard-rules.yml"
echo "monitoring: rules, rule tests, example config and dashboard queries are valid"
