# shellcheck shell=bash
# deploy/lib/lab/sfctl.sh - part of deploy/lab.sh: sfctl against the lab, JSON helpers, lease checks.
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.

sfctl_bin() {
    [ -x "$SF_BIN_DIR/sfctl" ] || die "missing $SF_BIN_DIR/sfctl (build with cargo build --release --bins)"
}

# sfctl_at URLS ARGS... - sfctl (from ${P}mgmt) against the coordinator(s) at URLS (one URL,
# or a comma separated list of replicas), with the admin token (LAB_TOKEN=reader: the
# read-only one).
sfctl_at() {
    local url=$1
    shift
    sfctl_bin
    ip netns exec "${P}mgmt" "$SF_BIN_DIR/sfctl" --endpoint "$url" --ca "$STATE/pki/ca.pem" \
        --token-file "$STATE/api-token${LAB_TOKEN:+-$LAB_TOKEN}" "$@"
}

# sfctl_cmd ARGS... - sfctl against the lab: every coordinator replica (plain lab: the one).
# sfctl itself moves between replicas (--endpoint a,b,c): it uses the first that accepts a
# connection, moves a read on to the next after a failure in transit, and sends a write once.
sfctl_cmd() { sfctl_at "$COORD_ENDPOINTS" "$@"; }

# json_get FIELD - read a JSON object on stdin, print FIELD (a top-level key,
# or inside a single wrapping object such as {"network": {...}}).
json_get() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
k = sys.argv[1]
def find(o):
    if isinstance(o, dict):
        if k in o:
            return o[k]
        for v in o.values():
            r = find(v)
            if r is not None:
                return r
    return None
v = find(d)
if v is None or v == "":
    sys.exit(1)
print(v)
' "$1"
}

# leases_up NODE... - `sfctl -o json status` lists each NODE with "lease":"up".
leases_up() {
    local out
    out=$(sfctl_cmd -o json status 2>/dev/null) || return 1
    printf '%s' "$out" | python3 -c '
import json, sys
want = set(sys.argv[1:])
d = json.load(sys.stdin)
up = set()
def walk(o, key=None):
    if isinstance(o, dict):
        name = o.get("name", o.get("node"))
        if name is None and "lease" in o:
            name = key
        if isinstance(name, str) and str(o.get("lease", "")).lower() == "up":
            up.add(name)
        for k, v in o.items():
            walk(v, k)
    elif isinstance(o, list):
        for v in o:
            walk(v)
nodes = d.get("nodes") if isinstance(d, dict) else None
walk(nodes if nodes is not None else d)
sys.exit(0 if want <= up else 1)
' "$@"
}
