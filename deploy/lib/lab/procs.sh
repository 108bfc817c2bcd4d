# shellcheck shell=bash
# deploy/lib/lab/procs.sh - part of deploy/lab.sh: process bookkeeping: start_bg, stop_proc, kill, liveness, waiting.
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.
#
# process bookkeeping: $STATE/pids/<name>.pid (+ <name>.cmd = argv, one per line)

# start_bg NAME NS CMD... - start CMD in namespace NS in its own session, logs to
# $STATE/logs/NAME.log, record its pid.
start_bg() {
    local name=$1 ns=$2 pid
    shift 2
    mkdir -p "$STATE/pids" "$STATE/logs"
    printf '%s\n' "$@" >"$STATE/pids/$name.cmd"
    if [ "${START_NSENTER:-0}" = 1 ]; then
        # nsenter joins only the network namespace: unlike `ip netns exec` it keeps the host
        # mount namespace, so namespaces the process creates (gateway VPC routers) are
        # visible to everyone and outlive the process.
        nsenter --net="/run/netns/$ns" setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
    else
        ip netns exec "$ns" setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
    fi
    pid=$!
    echo "$pid" >"$STATE/pids/$name.pid"
}

# pid_matches PID CMDFILE - /proc/PID is alive (not zombie) and its argv ends
# with the recorded argv (it may still be `ip netns exec NS setsid CMD...`).
pid_matches() {
    local pid=$1 cmdfile=$2 cur rec
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/cmdline" ] || return 1
    grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 1
    cur=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    rec=$(cat "$cmdfile" 2>/dev/null) || return 1
    [ -n "$rec" ] && [ -n "$cur" ] && [[ "$cur" == *"$rec" ]]
}

# proc_alive NAME
proc_alive() {
    local pf=$STATE/pids/$1.pid
    [ -f "$pf" ] && pid_matches "$(cat "$pf" 2>/dev/null)" "$STATE/pids/$1.cmd"
}

# stop_proc NAME - SIGTERM, wait up to 5 s, SIGKILL; only if still ours.
stop_proc() {
    local name=$1 pf=$STATE/pids/$1.pid cf=$STATE/pids/$1.cmd pid i
    [ -f "$pf" ] || return 0
    pid=$(cat "$pf" 2>/dev/null || true)
    if pid_matches "$pid" "$cf"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_matches "$pid" "$cf" || break
            sleep 0.1
        done
        if pid_matches "$pid" "$cf"; then
            log "$name (pid $pid) did not stop on SIGTERM, killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pf" "$cf"
}

log_tail() {
    local f=$STATE/logs/$1.log
    [ -s "$f" ] || return 0
    echo "----- last lines of $f -----" >&2
    tail -n "${2:-15}" "$f" >&2 || true
}

# check_procs [NAME...] - every recorded process (or each NAME that has a pid
# file) must still be running.
check_procs() {
    local pf name pfs=()
    if [ $# -gt 0 ]; then
        for name in "$@"; do pfs+=("$STATE/pids/$name.pid"); done
    else
        pfs=("$STATE"/pids/*.pid)
    fi
    for pf in "${pfs[@]}"; do
        [ -e "$pf" ] || continue
        name=$(basename "$pf" .pid)
        if ! proc_alive "$name"; then
            log "process '$name' is no longer running"
            log_tail "$name" 30
            return 1
        fi
    done
}

# wait_for TIMEOUT_S DESCRIPTION CMD... - poll CMD (quietly) until it succeeds;
# return 1 on timeout, 2 early if a recorded process died (only those named in
# $WAIT_PROCS if set, else all).
wait_for() {
    local t=$1 desc=$2 end
    shift 2
    end=$(($(date +%s) + t))
    until "$@" >/dev/null 2>&1; do
        # shellcheck disable=SC2086  # WAIT_PROCS is a word list
        check_procs ${WAIT_PROCS:-} || { log "while waiting for $desc"; return 2; }
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.3
    done
}
