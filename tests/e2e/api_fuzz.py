#!/usr/bin/env python3
"""Black-box robustness checks of the coordinator's two APIs, run by tests/e2e/fuzz.sh.

    api_fuzz.py limits   REST body limit (413) and session cap (the lab runs with a cap of 3)
    api_fuzz.py fuzz S   S seconds of malformed / mutated requests to every REST route and to
                         the gRPC API (raw HTTP/2 through curl, bad protobuf bytes)
    api_fuzz.py throttle login rate limit (429 with Retry-After)
    api_fuzz.py snapshot every REST list, for the before/after comparison

Environment: REST (https URL), REST_CA, REST_PASSWORD_FILE; for gRPC GRPC (host:port),
GRPC_TOKEN_FILE. Every request is invalid by construction (a broken body, or a reference to an
object that does not exist kept intact by every mutation), so nothing may change; the caller
compares the state before and after. Every answer must be a 4xx with the REST envelope, or a
gRPC status for bad input, never a 5xx, never a dropped connection. Prints PASS/FAIL lines;
exits 1 on any FAIL. Standard library only (and curl for HTTP/2).
"""

import http.client
import json
import os
import random
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

FAILS = 0
REST = os.environ.get("REST", "https://172.31.255.3:8080")
CA = os.environ.get("REST_CA")
MISSING = 987654  # an id no object has: every fuzzed write names it


def result(ok, what, detail=""):
    global FAILS
    if not ok:
        FAILS += 1
    print(f"  {'PASS' if ok else 'FAIL'} {what}" + ("" if ok else f": {detail}"), flush=True)
    return ok


def conn():
    u = urllib.parse.urlparse(REST)
    ctx = ssl.create_default_context(cafile=CA)
    return http.client.HTTPSConnection(u.hostname, u.port, timeout=30, context=ctx)


def call(method, path, data=None, headers=None, cookie=None):
    """(status, envelope or None, headers) of one request on a fresh connection; raises on a
    dropped connection."""
    c = conn()
    h = dict(headers or {})
    if cookie:
        h["Cookie"] = cookie
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    text = r.read()
    hdrs = dict(r.getheaders())
    c.close()
    try:
        env = json.loads(text)
        if not (isinstance(env, dict) and {"isSuccess", "message", "data"} <= env.keys()):
            env = None
    except ValueError:
        env = None
    return r.status, env, hdrs


def password():
    with open(os.environ["REST_PASSWORD_FILE"]) as f:
        return f.read().strip()


def login(pw=None):
    body = json.dumps({"user": "cloudstack", "password": pw or password()}).encode()
    st, env, h = call("POST", "/api/auth", body, {"Content-Type": "application/json"})
    sc = h.get("Set-Cookie", "")
    return st, (sc.split(";")[0] if st == 200 else None), h


def is_error_envelope(st, env, lo=400, hi=499):
    return lo <= st <= hi and env is not None and env["isSuccess"] is False and env["message"]


# ---------------------------------------------------------------------------------------------
# limits

def big_body(cookie, what, path, n):
    data = b'{"name": "' + b"x" * n + b'"}'
    try:
        st, env, h = call("POST", path, data, {"Content-Type": "application/json"}, cookie)
    except (OSError, http.client.HTTPException) as e:
        return result(False, what, f"connection dropped: {e!r}")
    return result(st == 413 and is_error_envelope(st, env),
                  what, f"HTTP {st}, envelope {env}")


def limits():
    st, cookie, _ = login()
    result(st == 200, "login")
    big_body(cookie, "a 10 MB body to POST /api/v2/vpc answers 413 with the envelope",
             "/api/v2/vpc", 10 << 20)
    big_body(None, "a 10 MB body to POST /api/auth (no session) answers 413 with the envelope",
             "/api/auth", 10 << 20)
    big_body(cookie, "a body just over 1 MiB answers 413", "/api/v2/vnet", (1 << 20) + 1)
    st, env, _ = call("GET", "/api/auth", cookie=cookie)
    result(st == 200, "the server still answers after them", f"HTTP {st}")
    session_cap(cookie)


def session_cap(first):
    """The lab runs this test's coordinator with --rest-max-sessions 3 (SF_REST_MAX_SESSIONS):
    `first` was used just now, so the next logins end the unused ones, never `first`."""
    others = []
    for _ in range(4):
        st, c, _ = login()
        others.append(c)
        call("GET", "/api/auth", cookie=first)  # in use
    alive = [call("GET", "/api/auth", cookie=c)[0] == 200 for c in others]
    result(call("GET", "/api/auth", cookie=first)[0] == 200,
           "session cap 3: the session in use survives 4 more logins")
    result(alive == [False, False, True, True],
           "session cap 3: the two oldest unused sessions were ended, the newest two live",
           f"alive: {alive}")


def throttle():
    refused = None
    for i in range(60):
        st, env, h = call("POST", "/api/auth",
                          json.dumps({"user": "cloudstack", "password": f"wrong{i}"}).encode(),
                          {"Content-Type": "application/json"})
        if st == 429:
            refused = (i, env, h)
            break
        if st != 401:
            return result(False, "wrong passwords answer 401 until throttled", f"HTTP {st}")
    if not result(refused is not None, "60 wrong logins in a row from one address meet a 429"):
        return
    i, env, h = refused
    ra = h.get("Retry-After", "")
    result(is_error_envelope(429, env) and ra.isdigit() and int(ra) >= 1,
           f"the 429 (after {i} attempts) has the envelope and Retry-After: {ra}", f"{env} {h}")
    # The bucket refills one login a second, so right-password logins sent back to back get
    # through at most once per second elapsed (plus one): the rest meet the 429 too. (One
    # login alone may come after a refill on a busy machine.)
    t0, answers = time.time(), [login()[0] for _ in range(6)]
    allowed = answers.count(200)
    result(429 in answers and allowed <= int(time.time() - t0) + 1,
           "right-password logins from that address are throttled too "
           f"({allowed} of 6 let through in {time.time() - t0:.1f} s)", f"HTTP {answers}")
    time.sleep(int(ra) + 1)
    st, _, _ = login()
    result(st == 200, f"after Retry-After ({ra} s) a login succeeds again", f"HTTP {st}")


# ---------------------------------------------------------------------------------------------
# REST fuzzing

MISS = {"id": MISSING, "name": "no-such-vpc"}
# The shapes CloudStack sends (tests/e2e/cloudstack_client.py), each with a reference to an
# object that does not exist (KEEP) that no mutation touches.
SHAPES = [
    ("/api/v2/vpc", {"name": "fz-vpc", "adminTenant": {"id": MISSING, "name": "no-such"},
                     "guestTenants": [], "tags": []}, "adminTenant"),
    ("/api/v2/ipam/allocation", {"name": "fz-alloc", "prefix": "10.99.0.0/16",
                                 "tenant": {"id": 1, "name": "Admin"}, "vpc": MISS}, "vpc"),
    ("/api/v2/ipam/subnet", {"name": "fz-sub", "prefix": "10.99.1.0/24", "purpose": "common",
                             "tenant": {"id": 1}, "vpc": MISS, "sites": [{"id": 1}]}, "vpc"),
    ("/api/v2/vnet", {"name": "fz-vnet", "vpc": MISS, "tenant": {"id": 1}, "vxlanID": 1500099,
                      "sites": [{"id": 1}], "gateways": [{"prefix": "10.99.1.1/24"}]}, "vpc"),
    ("/api/v2/nat", {"name": "fz-nat", "action": "DNAT", "protocol": "TCP", "state": "enabled",
                     "sourceAddress": "0.0.0.0/0", "destinationAddress": "203.0.113.41/32",
                     "destinationPort": "8080", "dnatToIP": "10.99.1.11/32", "dnatToPort": 80,
                     "site": {"id": 1}, "vpc": MISS}, "vpc"),
    ("/api/v2/l4lb", {"name": "fz-lb", "vpc": MISS, "protocol": "TCP", "frontendPort": 80,
                      "frontendIp": "203.0.113.44", "ipFamily": "IPv4", "status": "enable",
                      "healthCheck": "None", "backendIps": ["10.99.1.11:80"],
                      "site": {"id": 1}, "tenant": {"id": 1}}, "vpc"),
    ("/api/acl", {"name": "fz-acl", "action": "permit", "proto": "tcp", "src_prefix": "0.0.0.0/0",
                  "dst_prefix": "10.99.1.0/24", "dport1": 80, "dport2": 80, "vpc": MISS,
                  "comment": "fz"}, "vpc"),
    ("/api/routes", {"prefix": "192.168.99.0/24", "nextHop": "10.99.1.5", "vpc": MISS,
                     "site": {"id": 1}, "description": "fz", "switches": []}, "vpc"),
]
ID_ROUTES = ["/api/v2/vpc", "/api/v2/vnet", "/api/v2/nat", "/api/v2/l4lb",
             "/api/v2/ipam/allocation", "/api/v2/ipam/subnet"]
LISTS = ["/api/sites", "/api/tenants", "/api/v2/vpc", "/api/v2/ipam", "/api/v2/ipam/subnets",
         "/api/v2/ipam/allocations", "/api/v2/vnet", "/api/v2/nat", "/api/v2/l4lb", "/api/acl",
         "/api/routes"]
WEIRD = [None, True, False, 0, -1, 2**64, 1.5e308, "", " ", "x" * 5000, "\u0000", "é\ud7ff",
         "10.0.0.0/33", "999.1.1.1/8", "1.2.3.4", "::1/128", "-1", "0x10", [], [None], {},
         {"id": "x"}, {"id": -5}, {"prefix": None}, [[[[[]]]]], "../../etc", "%00", "A" * 65]


def weird(rng, depth=0):
    if depth < 3 and rng.random() < 0.2:
        return {rng.choice(["id", "name", "prefix", "x"]): weird(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}
    if depth < 3 and rng.random() < 0.1:
        return [weird(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(WEIRD)


def mutate(rng, body, keep):
    b = json.loads(json.dumps(body))
    keys = [k for k in b if k != keep]
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.3 and keys:
            b.pop(rng.choice(keys), None)
        elif op < 0.8 and keys:
            b[rng.choice(keys)] = weird(rng)
        else:
            # Unknown keys; never vpcID/vpc_id/tenant, which could stand in for the kept reference.
            b[rng.choice(["extra", "comment", "tags", "unknownField"])] = weird(rng)
    return b


def raw_body(rng):
    """A body that is not a JSON object."""
    return rng.choice([
        b"", b"{", b"}", b"[]", b"null", b"42", b'"str"', b"{\"a\":", b"\xff\xfe\xfd",
        b'{"name": "\xff"}', b"{" * 10000, b"[" * 100000, b'{"a":1,"a":2}',
        b'{"vpc": {"id": 1e400}}', bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))),
        b"user=cloudstack&password=%ZZ%", b'{"\\ud800": 1}',
    ])


def bad_id(rng):
    return rng.choice([str(MISSING), str(MISSING + rng.randint(1, 10**6)), "-1", "abc", "0x1",
                       "1.5", "%2e%2e", "18446744073709551616", "%00", "9" * 40, "%E2%82%AC"])


def rest_request(rng, cookie):
    """One invalid request: (method, path, body, content type)."""
    pick = rng.random()
    ctype = rng.choice(["application/json"] * 4 + ["text/plain", "application/x-www-form-urlencoded",
                                                   "multipart/form-data; boundary=x"])
    if pick < 0.35:
        path, body, keep = rng.choice(SHAPES)
        return "POST", path, json.dumps(mutate(rng, body, keep)).encode(), ctype
    if pick < 0.5:
        path = rng.choice([s[0] for s in SHAPES])
        return rng.choice(["POST", "PUT", "DELETE"]), path, raw_body(rng), ctype
    if pick < 0.7:
        path = rng.choice(ID_ROUTES) + "/" + bad_id(rng)
        method = rng.choice(["GET", "PUT", "DELETE"])
        body = json.dumps(mutate(rng, SHAPES[0][1], "adminTenant")).encode() if method == "PUT" else None
        return method, path, body, ctype
    if pick < 0.8:
        path = rng.choice(["/api/acl", "/api/routes"])
        method = rng.choice(["PUT", "DELETE"])
        body = {"id": rng.choice([MISSING, [MISSING, MISSING + 1], "x", None, [], -3])}
        if method == "PUT":
            body.update(mutate(rng, SHAPES[6][1], "vpc"))
            body["id"] = MISSING
        return method, path, json.dumps(body).encode(), ctype
    if pick < 0.9:
        path = rng.choice(LISTS + ["/api/v2/vpc/" + bad_id(rng) + "/resources"])
        q = urllib.parse.urlencode([(rng.choice(["vpc", "site", "filterByVpc", "filterBySites",
                                                 "x"]), str(weird(rng))) for _ in range(3)])
        return rng.choice(["PATCH", "POST", "OPTIONS", "DELETE", "GET"]), path + "?" + q, None, ctype
    path = rng.choice(["/api/nope", "/api/v2/vpc/1/2/3", "/" + "a/" * 50, "/api/v2/%ff",
                       "/api/auth/../v2/vpc", "/api/v2/vnet?" + "a=" * 2000])
    return rng.choice(["GET", "POST", "PUT"]), path, raw_body(rng), ctype


def fuzz_rest(rng, cookie, until):
    n, bad = 0, []
    statuses = {}
    while time.time() < until:
        method, path, body, ctype = rest_request(rng, cookie)
        try:
            st, env, _ = call(method, path, body, {"Content-Type": ctype},
                              cookie if rng.random() < 0.9 else None)
        except (OSError, http.client.HTTPException) as e:
            bad.append(f"{method} {path}: connection dropped: {e!r}")
            st, env = 0, None
        n += 1
        statuses[st] = statuses.get(st, 0) + 1
        if st and not (is_error_envelope(st, env) and st != 429):
            # 2xx for a GET of a list is fine (query junk is ignored); anything else is a finding.
            if not (st == 200 and method == "GET" and env and env["isSuccess"] is True):
                bad.append(f"{method} {path[:80]} {body[:120] if body else b''!r}: HTTP {st} {env}")
    result(not bad, f"REST: {n} fuzzed requests, every answer a 4xx with the envelope "
                    f"(statuses {dict(sorted(statuses.items()))})", "\n    " + "\n    ".join(bad[:15]))
    return n


# ---------------------------------------------------------------------------------------------
# gRPC fuzzing (raw HTTP/2 through curl: no grpcio needed)

METHODS = ["CreateTenant", "CreateVpc", "CreateNetwork", "CreatePortBinding", "CreateNode",
           "CreatePool", "CreateNatRule", "CreateRoute", "CreateLoadBalancer", "ApplyAclList",
           "CreateDirectConnect"]
REF_METHODS = ["DeleteTenant", "GetVpc", "DeleteVpc", "GetNetwork", "DeleteNetwork",
               "DeletePortBinding", "GetNode", "DeleteNode", "DeletePool", "DeleteNatRule",
               "DeleteRoute", "GetLoadBalancer", "DeleteLoadBalancer", "GetAclList",
               "DeleteAclList", "DeleteDirectConnect", "DrainGateway", "UndrainGateway"]
BAD_NAME = b"bad name!"  # outside [A-Za-z0-9._-]: invalid as any name


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def grpc_message(rng, method):
    """Protobuf bytes that never make a valid request: garbage, then (when the garbage
    parses) invalid names in the last-wins string fields."""
    garbage = rng.choice([
        b"", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))),
        b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab", b"\x08" + b"\xff" * 11, b"\x12\x02\xc3\x28",
        field(rng.randint(1, 30), bytes(rng.getrandbits(8) for _ in range(8))),
    ])
    tail = field(1, BAD_NAME)
    if method in REF_METHODS:
        tail += field(2, BAD_NAME) + field(3, BAD_NAME)
    if rng.random() < 0.2:
        return garbage  # alone: undecodable or (for a few bytes) a message of defaults
    return garbage + tail


def grpc_call(method, msg, frame=None):
    """(grpc-status, message, HTTP status) of one unary call through curl."""
    host = os.environ["GRPC"]
    with open(os.environ["GRPC_TOKEN_FILE"]) as f:
        token = f.read().strip()
    if frame is None:
        frame = b"\x00" + struct.pack(">I", len(msg)) + msg
    with tempfile.NamedTemporaryFile() as body, tempfile.NamedTemporaryFile() as hdr:
        body.write(frame)
        body.flush()
        p = subprocess.run(
            ["curl", "-s", "-m", "10", "--http2", "--cacert", CA, "-o", "/dev/null",
             "-D", hdr.name, "-X", "POST", "-H", "content-type: application/grpc",
             "-H", "te: trailers", "-H", f"authorization: Bearer {token}",
             "--data-binary", "@" + body.name, f"https://{host}/stackfabric.v1.FabricApi/{method}"],
            capture_output=True)
        heads = open(hdr.name, "rb").read().decode(errors="replace")
    if p.returncode != 0:
        return None, f"curl exit {p.returncode}", 0
    status, message, http_st = None, "", 0
    for line in heads.splitlines():
        k, _, v = line.partition(":")
        if line.startswith("HTTP/"):
            http_st = int(line.split()[1])
        elif k.lower() == "grpc-status":
            status = int(v.strip())
        elif k.lower() == "grpc-message":
            message = urllib.parse.unquote(v.strip())
    return status, message, http_st


# Answers tonic's codec gives before the coordinator's code sees a request: status, message
# start. (Undecodable protobuf and broken framing, INTERNAL in tonic, reach the client as
# INVALID_ARGUMENT: the coordinator rewrites them; only an oversized length is OUT_OF_RANGE.)
TONIC_CODEC = [(11, "error, decoded message length too large")]


def fuzz_grpc(rng, until):
    n, bad, codec, codes = 0, [], {}, {}
    while time.time() < until:
        method = rng.choice(METHODS + REF_METHODS)
        frame = None
        if rng.random() < 0.1:  # broken framing: compressed flag, lying length, short frame
            msg = field(1, BAD_NAME)
            frame = rng.choice([b"\x01", b"\x00\x00\x00\x10\x00", b"\x00\xff\xff\xff\xff",
                                b"\x00"]) + msg
        else:
            msg = grpc_message(rng, method)
        st, message, http_st = grpc_call(method, msg, frame)
        n += 1
        codes[st] = codes.get(st, 0) + 1
        if http_st == 200 and st in (3, 5, 9):  # INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION
            continue
        known = next((m for c, m in TONIC_CODEC if st == c and message.lower().startswith(m)), None)
        if http_st == 200 and known:
            codec[(st, known)] = codec.get((st, known), 0) + 1
            continue
        bad.append(f"{method} {(frame or msg)[:40]!r}: grpc-status {st} {message!r} (HTTP {http_st})")
    result(not bad, f"gRPC: {n} malformed calls, each refused with a bad-input status or a "
                    f"codec error (codes {codes})", "\n    " + "\n    ".join(bad[:15]))
    for (st, m), k in sorted(codec.items()):
        print(f"  NOTE {k} answered by tonic's codec: grpc-status {st} {m!r}")


def snapshot():
    """Prints every REST list (the state the fuzzer must not change)."""
    st, cookie, _ = login()
    if st != 200:
        sys.exit(f"login: HTTP {st}")
    for path in LISTS:
        st, env, _ = call("GET", path, cookie=cookie)
        print(path, st, json.dumps(env, sort_keys=True))


def fuzz(seconds):
    seed = int(os.environ.get("FUZZ_SEED", time.time()))
    print(f"  fuzz seed {seed} (FUZZ_SEED={seed} replays it)")
    rng = random.Random(seed)
    st, cookie, _ = login()
    if not result(st == 200, "login for the fuzzer"):
        return
    t0 = time.time()
    fuzz_rest(rng, cookie, t0 + seconds * 0.6)
    fuzz_grpc(rng, t0 + seconds)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "limits":
        limits()
    elif mode == "fuzz":
        fuzz(float(sys.argv[2]))
    elif mode == "throttle":
        throttle()
    elif mode == "snapshot":
        snapshot()
    else:
        sys.exit(f"unknown mode {mode}")
    sys.exit(1 if FAILS else 0)
