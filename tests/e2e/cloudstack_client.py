#!/usr/bin/env python3
"""Replays, over HTTP, the calls CloudStack's Netris provider makes, in CloudStack's order and
with CloudStack's object names, against StackFabric's Netris-compatible REST API.

    cloudstack_client.py URL PASSWORD_FILE setup|check|acl-open|lbacl-*|change|teardown

setup     log in, look up site and tenant, zone public range, VPC + allocation, two tiers,
          source NAT, port forward, static NAT, load balancer, ACLs, a static route
check     robustness: 401 without a session, malformed JSON, idempotent retries, conflicts,
          unknown ids and references, filters; nothing of it changes what setup made
acl-open  delete tier 1's "deny other TCP" ACL item
lbacl-deny-internet    limit the LB rule to 192.0.2.0/24: LBACL0 deny-all + LBACL1 permit
lbacl-permit-internet  add the internet host's address to the LB rule's CIDRs (LBACL2)
lbacl-clear            the LB rule's CIDR list removed: every LBACL record deleted
isolated  an isolated network outside a VPC: its controller VPC D1-A2-Z1-N20-isonet, allocation,
          subnet, vnet (VNI 1500003) and source NAT 203.0.113.46; iso-teardown removes it all
ipv6-setup     a routed dual-stack VPC tier in CloudStack's IPv6 shapes: the zone's IPv6 range
               as the System VPC's IPv6 allocation and common subnet (the lab's site pool,
               adopted), VPC D1-A2-Z1-V6-dualvpc with its IPv4 allocation and an IPv6 /48 from
               the zone range, tier N13 with an IPv6 `common` subnet (globalRouting) and a vnet
               with both gateways, tier N14 with its IPv4 gateway only; read back
ipv6-put       tier N14 gains its IPv6 gateway by PUT (its IPv6 subnet first)
ipv6-acl       tier N13's IPv6 ACL in CloudStack's shape: permit TCP 80 from ::/0 to the tier's
               /64, deny other TCP (as the IPv4 ACL of tier 1); a record mixing families is
               refused naming the field; listed back as sent
ipv6-acl-delete  both IPv6 ACL records deleted
ipv6-teardown  all of it removed in CloudStack's order (the caller removed the VMs first)
rename    tier 2 renamed (CloudStack's updateNetwork), its VNI, CIDR and traffic kept
change    the source NAT moves to another address (new /32, rule updated, old /32 released)
          and the load balancer's backends are replaced by the second VM alone
teardown  everything deleted in CloudStack's order (the caller removed the VMs first)

Like CloudStack it keeps no ids between calls: it finds its objects by name in the lists.
Prints PASS/FAIL per step; exits 1 if any step failed. Standard library only.
"""

import http.client
import json
import os
import ssl
import sys
import urllib.parse

URL, PASSWORD_FILE, PHASE = sys.argv[1], sys.argv[2], sys.argv[3]
P = "D1-A2-Z1-V5-"  # domain 1, account 2, zone 1, VPC 5
VPC_NAME = P + "myvpc"
TIERS = [  # name, cidr, gateway, VNI chosen by "CloudStack"
    (P + "N9-tier1", "10.20.1.0/24", "10.20.1.1/24", 1500001),
    (P + "N10-tier2", "10.20.2.0/24", "10.20.2.1/24", 1500002),
]
SNAT_IP, PF_IP, STATIC_IP, LB_IP = "203.0.113.40", "203.0.113.41", "203.0.113.42", "203.0.113.44"
SNAT_IP2 = "203.0.113.45"  # the source NAT's address after `change`
INTERNET_IP = "198.51.100.10"
TIER2_RENAMED = P + "N10-tier2-web"
ISO_VPC, ISO_CIDR, ISO_GW, ISO_VNI, ISO_SNAT = (
    "D1-A2-Z1-N20-isonet", "10.40.1.0/24", "10.40.1.1/24", 1500003, "203.0.113.46")
VM1, VM2 = "10.20.1.11", "10.20.2.11"
# The routed dual-stack VPC (ipv6-*): the zone's IPv6 range is the lab's site pool.
ZONE6 = ("Z1-2001:db8:100::/40", "2001:db8:100::/40")
V6_VPC, V6_CIDR, V6_RANGE = "D1-A2-Z1-V6-dualvpc", "10.30.0.0/16", "2001:db8:120::/48"
V6_TIERS = [  # name, IPv4 cidr, IPv4 gateway, VNI, IPv6 /64, IPv6 gateway (None: added by PUT)
    ("D1-A2-Z1-V6-N13-web6", "10.30.1.0/24", "10.30.1.1/24", 1500011,
     "2001:db8:120:1::/64", "2001:db8:120:1::1/64"),
    ("D1-A2-Z1-V6-N14-app6", "10.30.2.0/24", "10.30.2.1/24", 1500012,
     "2001:db8:120:2::/64", None),
]
V6_PUT_GW = "2001:db8:120:2::1/64"
ZONE_ALLOC = ("Z1-203.0.113.0/24", "203.0.113.0/24")
ZONE_COMMON = ("Z1-203.0.113.32/27", "203.0.113.32/27")
FAILS = 0


def result(ok, what, detail=""):
    global FAILS
    if ok:
        print(f"  PASS {what}")
    else:
        FAILS += 1
        print(f"  FAIL {what}: {detail}")
    return ok


class Client:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        # https: verify the server against $REST_CA (the lab CA), hostname (IP SAN) included.
        self.tls = ssl.create_default_context(cafile=os.environ.get("REST_CA")) if u.scheme == "https" else None
        self.cookie = None

    def call(self, method, path, body=None, raw=None, ctype="application/json", cookie=True):
        """Returns (HTTP status, envelope dict); raises on a non-JSON answer."""
        if self.tls:
            c = http.client.HTTPSConnection(self.host, self.port, timeout=30, context=self.tls)
        else:
            c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Accept": "application/json"}
        data = None
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
        elif body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = ctype
        if cookie and self.cookie:
            headers["Cookie"] = self.cookie
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        text = r.read().decode()
        # The SDK (okhttp 2.7.5) looks the cookie up under exactly `Set-Cookie`: match the case.
        sc = next((v for k, v in r.getheaders() if k == "Set-Cookie"), None)
        if sc and "HttpOnly" in sc and sc.startswith("connect.sid="):
            self.cookie = sc.split(";")[0]
        c.close()
        try:
            env = json.loads(text)
        except ValueError:
            raise AssertionError(f"{method} {path}: HTTP {r.status}, not JSON: {text[:200]!r}")
        for k in ("isSuccess", "message", "data"):
            if k not in env:
                raise AssertionError(f"{method} {path}: envelope lacks {k}: {text[:200]}")
        return r.status, env

    def ok(self, method, path, body=None, what=None):
        st, env = self.call(method, path, body)
        good = st == 200 and env["isSuccess"] is True
        result(good, what or f"{method} {path}", f"HTTP {st}: {env['message']}")
        if not good:
            raise SystemExit(1)
        return env["data"]

    def expect(self, status, method, path, body=None, raw=None, what=None, cookie=True, ctype="application/json"):
        st, env = self.call(method, path, body, raw=raw, cookie=cookie, ctype=ctype)
        good = st == status and env["isSuccess"] is False and env["message"] != ""
        result(good, what or f"{method} {path} -> {status}",
               f"HTTP {st}, isSuccess={env['isSuccess']}: {env['message']}")
        return env

    def find(self, path, name, key="name"):
        """The object named `name` in a list (CloudStack's way of finding its objects)."""
        for o in self.ok("GET", path, what=f"GET {path}"):
            if o.get(key) == name:
                return o
        return None


def login(c):
    password = open(PASSWORD_FILE).read().strip()
    c.ok("POST", "/api/auth", {"user": "cloudstack", "password": password, "authSchemeID": 1},
         what="log in (JSON body) sets connect.sid")
    result(c.cookie is not None, "session cookie received as `Set-Cookie` (exact case) with HttpOnly",
           "no Set-Cookie header in exactly that case")
    c.ok("GET", "/api/auth", what="GET /api/auth answers 200 with the session")
    return password


def bootstrap(c):
    site = next((s for s in c.ok("GET", "/api/sites") if s["name"] == "lab"), None)
    result(site is not None, "site 'lab' listed", "missing")
    tenant = next((t for t in c.ok("GET", "/api/tenants") if t["name"] == "Admin"), None)
    result(tenant is not None and tenant["id"] > 0, "admin tenant 'Admin' listed with an id", str(tenant))
    system = next((v for v in c.ok("GET", "/api/v2/vpc") if v.get("isSystem")), None)
    result(system is not None, "System VPC listed", "missing")
    site = {"id": site["id"], "name": site["name"]}
    tenant = {"id": tenant["id"], "name": tenant["name"]}
    return site, tenant, {"id": system["id"], "name": system["name"]}


def ensure_subnet(c, name, prefix, purpose, vpc, tenant, site):
    """CloudStack: list subnets, create if missing, re-purpose if it exists with another one."""
    for s in c.ok("GET", "/api/v2/ipam/subnets", what=f"GET subnets (looking for {prefix})"):
        if s["prefix"] == prefix and s["vpc"]["id"] == vpc["id"]:
            if s["purpose"] != purpose:
                c.ok("PUT", f"/api/v2/ipam/subnet/{s['id']}", {"name": name, "purpose": purpose},
                     what=f"re-purpose subnet {prefix} as {purpose}")
            return s
    return c.ok("POST", "/api/v2/ipam/subnet",
                {"name": name, "prefix": prefix, "purpose": purpose, "vpc": vpc, "tenant": tenant,
                 "sites": [site], "tags": []},
                what=f"subnet {prefix} purpose {purpose} in {vpc['name']}")


def setup(c):
    login(c)
    site, tenant, system = bootstrap(c)

    # Zone public range.
    c.ok("GET", "/api/v2/ipam")
    c.ok("POST", "/api/v2/ipam/allocation",
         {"name": ZONE_ALLOC[0], "prefix": ZONE_ALLOC[1], "vpc": system, "tenant": tenant},
         what=f"zone allocation {ZONE_ALLOC[1]} in the System VPC")
    ensure_subnet(c, ZONE_COMMON[0], ZONE_COMMON[1], "common", system, tenant, site)

    # VPC.
    c.ok("POST", "/api/v2/vpc", {"name": VPC_NAME, "adminTenant": tenant, "guestTenants": [],
                                 "tags": [], "someFutureField": {"x": 1}},
         what=f"create VPC {VPC_NAME}")
    v = c.find("/api/v2/vpc", VPC_NAME)
    vpc = {"id": v["id"], "name": v["name"]}
    c.ok("POST", "/api/v2/ipam/allocation",
         {"name": VPC_NAME, "prefix": "10.20.0.0/16", "vpc": vpc, "tenant": tenant},
         what="VPC allocation 10.20.0.0/16")

    # Tiers.
    for name, cidr, gw, vni in TIERS:
        ensure_subnet(c, name, cidr, "common", vpc, tenant, site)
        c.ok("POST", "/api/v2/vnet",
             {"name": name, "vpc": vpc, "sites": [site], "tenant": tenant, "vxlanID": vni,
              "vlan": 0, "vlanAware": False, "l3vpn": False, "state": "active",
              "tags": ["cs-lab"], "gateways": [{"prefix": gw, "dhcpEnabled": False}],
              "guestTenants": [], "ports": []},
             what=f"tier {name} VNI {vni}")

    # Source NAT.
    ensure_subnet(c, f"{SNAT_IP}/32", f"{SNAT_IP}/32", "nat", system, tenant, site)
    c.ok("GET", "/api/v2/nat")
    c.ok("POST", "/api/v2/nat",
         {"name": P + "SNAT", "action": "SNAT", "protocol": "ALL", "state": "enabled",
          "sourceAddress": "10.20.0.0/16", "sourcePort": "1-65535",
          "destinationAddress": "0.0.0.0/0", "destinationPort": "1-65535",
          "snatToIP": f"{SNAT_IP}/32", "site": site, "vpc": vpc, "comment": "source NAT"},
         what=f"source NAT -> {SNAT_IP}")
    # Port forwarding.
    ensure_subnet(c, f"{PF_IP}/32", f"{PF_IP}/32", "nat", system, tenant, site)
    c.ok("POST", "/api/v2/nat",
         {"name": P + "DNAT-R12", "action": "DNAT", "protocol": "TCP", "state": "enabled",
          "sourceAddress": "0.0.0.0/0", "sourcePort": "1-65535",
          "destinationAddress": f"{PF_IP}/32", "destinationPort": "8080",
          "dnatToIP": f"{VM1}/32", "dnatToPort": "80", "site": site, "vpc": vpc, "comment": ""},
         what=f"port forward {PF_IP}:8080 -> {VM1}:80")
    # Static NAT.
    ensure_subnet(c, f"{STATIC_IP}/32", f"{STATIC_IP}/32", "nat", system, tenant, site)
    c.ok("POST", "/api/v2/nat",
         {"name": P + "VM7-STATICNAT", "action": "DNAT", "protocol": "ALL", "state": "enabled",
          "sourceAddress": "0.0.0.0/0", "destinationAddress": f"{STATIC_IP}/32",
          "dnatToIP": f"{VM2}/32", "site": site, "vpc": vpc},
         what=f"static NAT {STATIC_IP} <-> {VM2}")
    # Load balancer.
    ensure_subnet(c, f"{LB_IP}/32", f"{LB_IP}/32", "nat", system, tenant, site)  # re-purposed next
    ensure_subnet(c, f"{LB_IP}/32", f"{LB_IP}/32", "load-balancer", system, tenant, site)
    c.ok("GET", "/api/v2/l4lb")
    c.ok("POST", "/api/v2/l4lb",
         {"name": P + "LB3", "protocol": "TCP", "site": site, "siteID": site["id"],
          "tenant": tenant, "vpc": {"id": vpc["id"]}, "automatic": False, "ipFamily": "ipv4",
          "ip": LB_IP, "port": 80, "status": "enable",
          "backendIps": [{"ip": VM1, "port": 80}, {"ip": VM2, "port": 80}], "healthCheck": "None"},
         what=f"load balancer {LB_IP}:80 -> {VM1}, {VM2}")

    # Network ACL of tier 1 (CloudStack sends one record per item, tier CIDR as dst for
    # ingress and as src for egress; mapped onto a StackFabric ACL list of the tier).
    c.ok("GET", "/api/acl")
    acl = {"name": P + "N9-ACL1", "action": "permit", "comment": "ingress http", "proto": "tcp",
           "established": 0, "src_prefix": "0.0.0.0/0", "src_port_from": 1,
           "src_port_to": 65535, "dst_prefix": "10.20.1.0/24", "dst_port_from": 80,
           "dst_port_to": 80, "vpc": {"id": vpc["id"]}}
    c.ok("POST", "/api/acl", acl, what="ACL 1 (ingress permit tcp/80)")
    c.ok("POST", "/api/acl",
         {"name": P + "N9-ACL2", "action": "deny", "comment": "ingress other tcp", "proto": "tcp",
          "established": 0, "src_prefix": "0.0.0.0/0", "src_port_from": 1,
          "src_port_to": 65535, "dst_prefix": "10.20.1.0/24", "dst_port_from": 1,
          "dst_port_to": 65535, "vpc": {"id": vpc["id"]}}, what="ACL 2 (ingress deny tcp)")
    # Tier 1 -> tier 2: src and dst are both tier CIDRs; the name (N9) makes it tier 1's egress.
    st, env = c.call("POST", "/api/acl",
                     {"name": P + "N9-ACL3", "action": "deny", "comment": "egress 8022 to tier2",
                      "proto": "tcp", "established": 0, "src_prefix": "10.20.1.0/24",
                      "src_port_from": 1, "src_port_to": 65535, "dst_prefix": "10.20.2.0/24",
                      "dst_port_from": 8022, "dst_port_to": 8022, "vpc": {"id": vpc["id"]}})
    result(st == 200 and env["isSuccess"] and "egress rule of tier" in env["message"]
           and "N9-tier1" in env["message"], "ACL 3 (egress deny tcp/8022 to tier 2) is tier 1's egress",
           f"HTTP {st}: {env['message']}")
    a = c.find("/api/acl", P + "N9-ACL1")
    result(a is not None and a.get("protocol") == "tcp" and a.get("dst_length") == 24
           and isinstance(a.get("tenantsID"), str), "ACL listed in Netris's v1 shape", json.dumps(a)[:300])
    c.ok("PUT", "/api/acl", dict(acl, id=a["id"], comment="ingress http (updated)"),
         what="ACL 1 updated with PUT /api/acl")

    # Static route.
    c.ok("GET", "/api/routes")
    c.ok("POST", "/api/routes",
         {"prefix": "192.168.60.0/24", "next_hop": VM2, "site_id": site["id"],
          "stateStatus": "active", "switches": [], "description": P + "SR4",
          "vpc": {"id": vpc["id"], "name": vpc["name"], "isDefault": False, "isSystem": False}},
         what=f"static route 192.168.60.0/24 via {VM2}")

    # What CloudStack reads back.
    vnets = c.ok("GET", f"/api/v2/vnet?vpc={vpc['id']}", what="vnets of the VPC")
    result(sorted(x["vxlanID"] for x in vnets) == [1500001, 1500002], "vnets carry CloudStack's VNIs",
           json.dumps(vnets)[:300])
    nats = c.ok("GET", f"/api/v2/nat?vpc={vpc['id']}")
    result(len(nats) == 3, "three NAT rules listed for the VPC", str(len(nats)))
    acls = c.ok("GET", f"/api/acl?vpc={vpc['id']}")
    result(len(acls) == 3 and any(x["comment"] == "ingress http (updated)" for x in acls),
           "three ACLs listed back, the update kept", json.dumps(acls)[:300])


def check(c):
    """Robustness; changes nothing."""
    anon = Client(URL)
    anon.expect(401, "GET", "/api/auth", what="GET /api/auth without a session -> 401")
    anon.expect(401, "GET", "/api/v2/vpc", what="GET /api/v2/vpc without a session -> 401")
    anon.cookie = "connect.sid=forged"
    anon.expect(401, "POST", "/api/v2/vpc", {"name": "x"}, what="forged cookie -> 401")
    anon.cookie = None
    anon.expect(401, "POST", "/api/auth", {"user": "cloudstack", "password": "wrong"},
                what="wrong password -> 401")
    password = login(c)
    form = Client(URL)
    st, env = form.call("POST", "/api/auth", raw=urllib.parse.urlencode(
        {"user": "cloudstack", "password": password, "auth_scheme_id": 1}),
        ctype="application/x-www-form-urlencoded")
    result(st == 200 and env["isSuccess"] and form.cookie, "log in with a form body", env["message"])

    site, tenant, system = bootstrap(c)
    v = c.find("/api/v2/vpc", VPC_NAME)
    vpc = {"id": v["id"], "name": v["name"]}
    before = {p: len(c.ok("GET", p, what=f"count {p}")) for p in
              ("/api/v2/vpc", "/api/v2/vnet", "/api/v2/nat", "/api/v2/l4lb", "/api/acl",
               "/api/routes", "/api/v2/ipam/subnets", "/api/v2/ipam/allocations")}

    c.expect(400, "POST", "/api/v2/vnet", raw='{"name": "broken", ', what="malformed JSON -> 400 envelope")
    c.expect(400, "POST", "/api/v2/nat", raw="[1,2]", what="JSON that is not an object -> 400")
    c.expect(400, "POST", "/api/v2/vnet", {"vpc": vpc}, what="missing name -> 400")

    # Retried creates return the existing object.
    name, cidr, gw, vni = TIERS[0]
    body = {"name": name, "vpc": vpc, "sites": [site], "tenant": tenant, "vxlanID": vni,
            "vlan": 0, "vlanAware": False, "l3vpn": False, "state": "active", "tags": ["cs-lab"],
            "gateways": [{"prefix": gw, "dhcpEnabled": False}]}
    first = c.find("/api/v2/vnet", name)
    again = c.ok("POST", "/api/v2/vnet", body, what="retried vnet create succeeds")
    result(again["id"] == first["id"], "and returns the existing vnet (same id)", f"{again['id']} != {first['id']}")
    again = c.ok("POST", "/api/v2/vpc", {"name": VPC_NAME, "adminTenant": tenant},
                 what="retried VPC create succeeds")
    result(again["id"] == vpc["id"], "and returns the existing VPC", str(again["id"]))
    c.ok("POST", "/api/v2/nat",
         {"name": P + "VM7-STATICNAT", "action": "DNAT", "protocol": "ALL", "state": "enabled",
          "sourceAddress": "0.0.0.0/0", "destinationAddress": f"{STATIC_IP}/32",
          "dnatToIP": f"{VM2}/32", "site": site, "vpc": vpc}, what="retried static NAT create succeeds")

    # Conflicts and bad references.
    c.expect(409, "POST", "/api/v2/vnet", dict(body, vxlanID=1500099),
             what="same vnet name, other content -> 409")
    c.expect(409, "POST", "/api/v2/vnet",
             dict(body, name=P + "N11-tier3", gateways=[{"prefix": "10.20.3.1/24"}]),
             what="VNI already used by another tier -> 409")
    c.expect(404, "POST", "/api/v2/vnet", dict(body, name=P + "N12-x", vpc={"id": 424242}),
             what="unknown VPC reference -> 404")
    c.expect(400, "POST", "/api/v2/nat",
             {"name": P + "DNAT-R99", "action": "DNAT", "protocol": "TCP", "vpc": vpc,
              "destinationAddress": "192.0.2.7/32", "destinationPort": "80",
              "dnatToIP": f"{VM1}/32", "dnatToPort": "80"},
             what="public address outside every pool -> 400 (sf-core validation)")
    c.expect(400, "POST", "/api/v2/ipam/subnet",
             {"name": "outside", "prefix": "198.18.0.0/24", "purpose": "nat", "vpc": system},
             what="subnet outside every allocation -> 400")
    c.expect(404, "DELETE", "/api/v2/vnet/999999", what="DELETE unknown vnet id -> 404")
    c.expect(404, "PUT", "/api/v2/nat/999999", {"name": "x"}, what="PUT unknown NAT id -> 404")
    c.expect(404, "GET", "/api/v2/l4lb/999999", what="GET unknown l4lb id -> 404")
    c.expect(404, "DELETE", "/api/acl", {"id": [999999]}, what="DELETE unknown ACL id -> 404")
    c.expect(409, "DELETE", f"/api/v2/vpc/{vpc['id']}", what="DELETE a VPC that still has tiers -> 409")
    c.expect(404, "GET", "/api/v2/nothing", what="unknown endpoint -> 404 envelope")

    # Filters.
    result(len(c.ok("GET", f"/api/v2/vnet?vpc={vpc['id']}")) == 2, "vnet list filtered by vpc id", "")
    result(len(c.ok("GET", f"/api/v2/vnet?vpc={system['id']}")) == 0, "no vnet in the System VPC", "")
    result(len(c.ok("GET", "/api/v2/nat?site=999")) == 0, "unknown site filters everything out", "")
    result(len(c.ok("GET", f"/api/v2/l4lb?site={site['id']}&vpc={vpc['id']}")) == 1, "l4lb by site and vpc", "")

    after = {p: len(c.ok("GET", p, what=f"count {p} again")) for p in before}
    result(after == before, "rejected and retried requests created nothing", f"{before} -> {after}")


def acl_open(c):
    """CloudStack removes ACL item 2 (ingress deny tcp) of tier 1."""
    login(c)
    a = c.find("/api/acl", P + "N9-ACL2")
    c.ok("DELETE", "/api/acl", {"id": [a["id"]]}, what="delete ACL 2 (ingress deny tcp)")


def lbacl(c, n, action, src):
    """CloudStack's ACL record for item `n` of the LB rule's CIDR list (System VPC)."""
    site, tenant, system = bootstrap(c)
    c.ok("POST", "/api/acl",
         {"name": f"{P}LBACL{n}-3", "action": action, "comment": "lb source", "proto": "tcp",
          "established": 0, "src_prefix": src, "src_port_from": 1, "src_port_to": 65535,
          "dst_prefix": f"{LB_IP}/32", "dst_port_from": 80, "dst_port_to": 80, "vpc": system},
         what=f"LBACL{n}: {action} {src} -> {LB_IP}:80")


def lbacl_deny_internet(c):
    login(c)
    lbacl(c, 0, "deny", "0.0.0.0/0")
    lbacl(c, 1, "permit", "192.0.2.0/24")


def lbacl_permit_internet(c):
    login(c)
    lbacl(c, 2, "permit", f"{INTERNET_IP}/32")


def lbacl_clear(c):
    login(c)
    ids = [a["id"] for a in c.ok("GET", "/api/acl") if "-LBACL" in a["name"]]
    result(len(ids) == 3, "three LBACL records listed", str(ids))
    c.ok("DELETE", "/api/acl", {"id": ids}, what="delete the LB rule's CIDR list")


def change(c):
    login(c)
    site, tenant, system = bootstrap(c)
    ensure_subnet(c, f"{SNAT_IP2}/32", f"{SNAT_IP2}/32", "nat", system, tenant, site)
    r = c.find("/api/v2/nat", P + "SNAT")
    c.ok("PUT", f"/api/v2/nat/{r['id']}", {"name": P + "SNAT", "snatToIP": f"{SNAT_IP2}/32"},
         what=f"source NAT moves to {SNAT_IP2}")
    for s in c.ok("GET", "/api/v2/ipam/subnets"):
        if s["prefix"] == f"{SNAT_IP}/32":
            c.ok("DELETE", f"/api/v2/ipam/subnet/{s['id']}", what=f"release {SNAT_IP}")
    v = c.find("/api/v2/vpc", VPC_NAME)
    lb = c.find(f"/api/v2/l4lb?vpc={v['id']}", P + "LB3")
    c.ok("PUT", f"/api/v2/l4lb/{lb['id']}",
         {"name": P + "LB3", "protocol": "TCP", "ip": LB_IP, "port": 80, "status": "enable",
          "healthCheck": "None", "vpc": {"id": v["id"]}, "backendIps": [{"ip": VM2, "port": 80}]},
         what=f"load balancer backends -> {VM2} alone")
    got = c.find(f"/api/v2/l4lb?vpc={v['id']}", P + "LB3")
    result([b["ip"] for b in got["backendIps"]] == [VM2], "the LB lists the new backends",
           json.dumps(got)[:300])


def subnet6(c, name, prefix, vpc, tenant, site, global_routing):
    """An IPv6 `common` subnet as NetrisApiClientImpl.createIpamSubnetInternal sends it."""
    return c.ok("POST", "/api/v2/ipam/subnet",
                {"name": name, "prefix": prefix, "purpose": "common", "vpc": vpc, "tenant": tenant,
                 "sites": [site], "globalRouting": global_routing},
                what=f"IPv6 subnet {prefix} purpose common globalRouting={global_routing} in {vpc['name']}")


def v6_vnet_body(vpc, site, tenant, name, vni, gateways):
    return {"name": name, "vpc": vpc, "sites": [site], "tenant": tenant, "vxlanID": vni,
            "vlan": 0, "vlanAware": False, "l3vpn": False, "state": "active", "tags": ["cs-lab"],
            "customAnycastMac": "", "nativeVlan": 0, "vlans": "",
            "gateways": [{"prefix": g, "dhcpEnabled": False,
                          "dhcp": {"start": "", "end": "", "optionSet": {}}} for g in gateways],
            "guestTenants": [], "ports": []}


def ipv6_setup(c):
    login(c)
    site, tenant, system = bootstrap(c)
    # The zone's IPv6 range: SetupNetrisPublicRangeCommand(zone, ip6Cidr, ip6Cidr), an
    # allocation and a common subnet of the same prefix in the System VPC.
    c.ok("GET", "/api/v2/ipam")
    z = c.ok("POST", "/api/v2/ipam/allocation",
             {"name": ZONE6[0], "prefix": ZONE6[1], "vpc": system, "tenant": tenant},
             what=f"zone IPv6 allocation {ZONE6[1]} in the System VPC")
    c.ok("POST", "/api/v2/ipam/subnet",
         {"name": ZONE6[0], "prefix": ZONE6[1], "purpose": "common", "vpc": system,
          "tenant": tenant, "sites": [site]}, what=f"zone IPv6 subnet {ZONE6[1]} (common)")
    c.ok("POST", "/api/v2/vpc", {"name": V6_VPC, "adminTenant": tenant, "guestTenants": [], "tags": []},
         what=f"create VPC {V6_VPC}")
    v = c.find("/api/v2/vpc", V6_VPC)
    vpc = {"id": v["id"], "name": v["name"]}
    c.ok("POST", "/api/v2/ipam/allocation",
         {"name": f"{V6_VPC}-{V6_CIDR}", "prefix": V6_CIDR, "vpc": vpc, "tenant": tenant},
         what=f"VPC allocation {V6_CIDR}")
    a6 = c.ok("POST", "/api/v2/ipam/allocation",
              {"name": f"{V6_VPC}-{V6_RANGE}", "prefix": V6_RANGE, "vpc": vpc, "tenant": tenant},
              what=f"VPC IPv6 allocation {V6_RANGE} (from the zone's range, no ipFamily)")
    for name, cidr, gw, vni, p6, gw6 in V6_TIERS:
        ensure_subnet(c, f"{V6_VPC}-{cidr}", cidr, "common", vpc, tenant, site)
        gws = [gw]
        if gw6:
            subnet6(c, f"{V6_VPC}-{p6}", p6, vpc, tenant, site, True)
            gws.append(gw6)
        c.ok("POST", "/api/v2/vnet", v6_vnet_body(vpc, site, tenant, name, vni, gws),
             what=f"vnet {name} VNI {vni} gateways {gws}")

    # What CloudStack reads back (ids, prefixes, ipFamily), through the lists it uses.
    allocs = {a["prefix"]: a for a in c.ok("GET", "/api/v2/ipam/allocations")}
    za, va = allocs.get(ZONE6[1]), allocs.get(V6_RANGE)
    result(za is not None and za["id"] == z["id"] and za["ipFamily"] == "ipv6"
           and za["vpc"]["id"] == system["id"], "the zone's IPv6 allocation is listed (ipv6, System VPC)",
           json.dumps(za)[:300])
    result(va is not None and va["id"] == a6["id"] and va["ipFamily"] == "ipv6"
           and va["vpc"]["id"] == vpc["id"], "the VPC's IPv6 allocation is listed (ipv6, its VPC)",
           json.dumps(va)[:300])
    sn = next((s for s in c.ok("GET", "/api/v2/ipam/subnets") if s["prefix"] == V6_TIERS[0][4]), None)
    result(sn is not None and sn["ipFamily"] == "ipv6" and sn["purpose"] == "common"
           and sn["globalRouting"] is True and sn["allocationID"] == a6["id"]
           and sn["vpc"]["id"] == vpc["id"],
           "the tier's IPv6 subnet is listed: ipv6, common, globalRouting, allocationID = the /48",
           json.dumps(sn)[:300])
    tree = c.ok("GET", "/api/v2/ipam")
    result(any(t["prefix"] == ZONE6[1] for t in tree) and any(t["prefix"] == V6_RANGE for t in tree),
           "GET /api/v2/ipam lists both IPv6 allocations (CloudStack looks for an enclosing one there)",
           str([t["prefix"] for t in tree]))
    vn = c.find(f"/api/v2/vnet?vpc={vpc['id']}", V6_TIERS[0][0])
    got = [g["prefix"] for g in (vn or {}).get("gateways", [])]
    result(got == [V6_TIERS[0][2], V6_TIERS[0][5]], "the dual-stack vnet lists both gateways", str(got))


def ipv6_put(c):
    login(c)
    site, tenant, system = bootstrap(c)
    v = c.find("/api/v2/vpc", V6_VPC)
    vpc = {"id": v["id"], "name": v["name"]}
    name, cidr, gw, vni, p6, _ = V6_TIERS[1]
    subnet6(c, f"{V6_VPC}-{p6}", p6, vpc, tenant, site, True)
    n = c.find(f"/api/v2/vnet?vpc={vpc['id']}", name)
    c.ok("PUT", f"/api/v2/vnet/{n['id']}",
         v6_vnet_body(vpc, site, tenant, name, vni, [gw, V6_PUT_GW]),
         what=f"vnet {name} gains its IPv6 gateway {V6_PUT_GW} by PUT")
    got = c.find(f"/api/v2/vnet?vpc={vpc['id']}", name)
    result(got is not None and got["id"] == n["id"] and got["vxlanID"] == vni
           and [g["prefix"] for g in got["gateways"]] == [gw, V6_PUT_GW],
           "the vnet keeps its id and VNI and lists both gateways", json.dumps(got)[:300])


def acl6_body(vpc, rule, action, dst_from, dst_to, src="::/0", dst=None):
    """An `AclAddItem` as NetrisApiClientImpl.getAclAddItem fills it for an ingress rule of
    tier N13 whose source CIDR is IPv6: `dst_prefix` the tier's IPv6 /64 (getIp6Cidr)."""
    return {"name": f"D1-A2-Z1-V6-N13-ACL{rule}", "action": action, "comment": f"ipv6 rule {rule}",
            "proto": "tcp", "established": 1, "reverse": "no", "src_prefix": src,
            "src_port_from": 1, "src_port_to": 65535, "dst_prefix": dst or V6_TIERS[0][4],
            "dst_port_from": dst_from, "dst_port_to": dst_to, "vpc": vpc}


def ipv6_acl(c):
    login(c)
    v = c.find("/api/v2/vpc", V6_VPC)
    vpc = {"id": v["id"]}
    c.ok("GET", "/api/acl")
    env = c.ok("POST", "/api/acl", acl6_body(vpc, 21, "permit", 80, 80),
               what=f"IPv6 ACL 21: permit tcp/80 from ::/0 to {V6_TIERS[0][4]}")
    c.ok("POST", "/api/acl", acl6_body(vpc, 22, "deny", 1, 65535),
         what=f"IPv6 ACL 22: deny other tcp from ::/0 to {V6_TIERS[0][4]}")
    # A rule mixing families (an IPv4 source, the tier's /64) cannot be applied: 400.
    st, env = c.call("POST", "/api/acl", acl6_body(vpc, 23, "permit", 22, 22, src="0.0.0.0/0"))
    result(st == 400 and "dst_prefix" in env.get("message", ""),
           "an ACL mixing IPv4 and IPv6 prefixes is refused naming dst_prefix",
           f"HTTP {st}: {env.get('message')}")
    a = c.find("/api/acl", "D1-A2-Z1-V6-N13-ACL21")
    result(a is not None and a["src_prefix"] == "::/0" and a["dst_prefix"] == V6_TIERS[0][4]
           and a["ip_version"] == "ipv6" and a["dst_port_from"] == 80,
           "the IPv6 ACL is listed back as sent (ipv6)", json.dumps(a)[:300])
    acls = [x for x in c.ok("GET", f"/api/acl?vpc={v['id']}") if x["name"].startswith("D1-A2-Z1-V6-")]
    result(len(acls) == 2, "two IPv6 ACLs listed for the VPC", json.dumps(acls)[:300])


def ipv6_acl_delete(c):
    login(c)
    v = c.find("/api/v2/vpc", V6_VPC)
    ids = [a["id"] for a in c.ok("GET", f"/api/acl?vpc={v['id']}") if a["name"].startswith("D1-A2-Z1-V6-")]
    result(len(ids) == 2, "two IPv6 ACL records to delete", str(ids))
    c.ok("DELETE", "/api/acl", {"id": ids}, what="delete the IPv6 ACL records")
    left = [a["name"] for a in c.ok("GET", "/api/acl") if a["name"].startswith("D1-A2-Z1-V6-")]
    result(not left, "no IPv6 ACL record remains", str(left))


def ipv6_teardown(c):
    login(c)
    v = c.find("/api/v2/vpc", V6_VPC)
    vpc = {"id": v["id"], "name": v["name"]}
    for name, cidr, _, _, p6, _ in V6_TIERS:
        n = c.find(f"/api/v2/vnet?vpc={vpc['id']}", name)
        c.ok("DELETE", f"/api/v2/vnet/{n['id']}", what=f"delete vnet {name}")
        for s in c.ok("GET", "/api/v2/ipam/subnets"):
            if s["vpc"]["id"] == vpc["id"] and s["prefix"] in (cidr, p6):
                c.ok("DELETE", f"/api/v2/ipam/subnet/{s['id']}", what=f"delete subnet {s['prefix']}")
    # deleteVnet removes the tier's IPv6 allocation by name; the VPC's go with the VPC.
    for a in c.ok("GET", f"/api/v2/vpc/{vpc['id']}/resources")[0]["allocation"]:
        c.ok("DELETE", f"/api/v2/ipam/allocation/{a['id']}", what=f"delete allocation {a['name']}")
    c.ok("DELETE", f"/api/v2/vpc/{vpc['id']}", what=f"delete VPC {V6_VPC}")
    for s in c.ok("GET", "/api/v2/ipam/subnets"):
        if s["prefix"] == ZONE6[1]:
            c.ok("DELETE", f"/api/v2/ipam/subnet/{s['id']}", what="delete the zone's IPv6 subnet")
    a = next(a for a in c.ok("GET", "/api/v2/ipam/allocations") if a["prefix"] == ZONE6[1])
    c.ok("DELETE", f"/api/v2/ipam/allocation/{a['id']}", what="delete the zone's IPv6 allocation")
    left = [x["prefix"] for k in ("subnets", "allocations")
            for x in c.ok("GET", f"/api/v2/ipam/{k}") if ":" in x["prefix"]]
    result(not left, "no IPv6 allocation or subnet remains", str(left))


def rename(c):
    login(c)
    v = c.find("/api/v2/vpc", VPC_NAME)
    n = c.find(f"/api/v2/vnet?vpc={v['id']}", TIERS[1][0])
    c.ok("PUT", f"/api/v2/vnet/{n['id']}", {"name": TIER2_RENAMED, "vpc": {"id": v["id"]}},
         what=f"rename tier 2 to {TIER2_RENAMED}")
    got = c.find(f"/api/v2/vnet?vpc={v['id']}", TIER2_RENAMED)
    result(got is not None and got["vxlanID"] == TIERS[1][3], "the renamed tier keeps its VNI",
           json.dumps(got)[:300])


def isolated(c):
    login(c)
    site, tenant, system = bootstrap(c)
    c.ok("POST", "/api/v2/vpc", {"name": ISO_VPC, "adminTenant": tenant, "guestTenants": [], "tags": []},
         what=f"isolated network's controller VPC {ISO_VPC}")
    v = c.find("/api/v2/vpc", ISO_VPC)
    vpc = {"id": v["id"], "name": v["name"]}
    c.ok("POST", "/api/v2/ipam/allocation",
         {"name": ISO_VPC, "prefix": ISO_CIDR, "vpc": vpc, "tenant": tenant}, what="its allocation")
    ensure_subnet(c, ISO_VPC, ISO_CIDR, "common", vpc, tenant, site)
    c.ok("POST", "/api/v2/vnet",
         {"name": ISO_VPC, "vpc": vpc, "sites": [site], "tenant": tenant, "vxlanID": ISO_VNI,
          "vlan": 0, "vlanAware": False, "l3vpn": False, "state": "active", "tags": [],
          "gateways": [{"prefix": ISO_GW, "dhcpEnabled": False}], "guestTenants": [], "ports": []},
         what=f"isolated network vnet VNI {ISO_VNI}")
    ensure_subnet(c, f"{ISO_SNAT}/32", f"{ISO_SNAT}/32", "nat", system, tenant, site)
    c.ok("POST", "/api/v2/nat",
         {"name": ISO_VPC + "-SNAT", "action": "SNAT", "protocol": "ALL", "state": "enabled",
          "sourceAddress": ISO_CIDR, "sourcePort": "1-65535", "destinationAddress": "0.0.0.0/0",
          "destinationPort": "1-65535", "snatToIP": f"{ISO_SNAT}/32", "site": site, "vpc": vpc},
         what=f"its source NAT -> {ISO_SNAT}")


def iso_teardown(c):
    login(c)
    v = c.find("/api/v2/vpc", ISO_VPC)
    for s in c.ok("GET", "/api/v2/ipam/subnets"):
        if s["prefix"] == f"{ISO_SNAT}/32":
            c.ok("DELETE", f"/api/v2/ipam/subnet/{s['id']}", what=f"release {ISO_SNAT}")
    r = c.find("/api/v2/nat", ISO_VPC + "-SNAT")
    c.ok("DELETE", f"/api/v2/nat/{r['id']}", what="delete its source NAT")
    n = c.find(f"/api/v2/vnet?vpc={v['id']}", ISO_VPC)
    c.ok("DELETE", f"/api/v2/vnet/{n['id']}", what="delete its vnet")
    s = next(s for s in c.ok("GET", "/api/v2/ipam/subnets") if s["prefix"] == ISO_CIDR)
    c.ok("DELETE", f"/api/v2/ipam/subnet/{s['id']}", what="delete its subnet")
    a = next(a for a in c.ok("GET", "/api/v2/ipam/allocations") if a["vpc"]["id"] == v["id"])
    c.ok("DELETE", f"/api/v2/ipam/allocation/{a['id']}", what="delete its allocation")
    c.ok("DELETE", f"/api/v2/vpc/{v['id']}", what="delete its controller VPC")


def teardown(c):
    login(c)
    site, tenant, system = bootstrap(c)
    v = c.find("/api/v2/vpc", VPC_NAME)
    vpc = {"id": v["id"], "name": v["name"]}

    def release_ip(ip):
        for s in c.ok("GET", "/api/v2/ipam/subnets", what=f"find subnet {ip}/32"):
            if s["prefix"] == f"{ip}/32":
                c.ok("DELETE", f"/api/v2/ipam/subnet/{s['id']}", what=f"release {ip}")

    # Load balancer, static NAT, port forward.
    lb = c.find(f"/api/v2/l4lb?vpc={vpc['id']}", P + "LB3")
    c.ok("DELETE", f"/api/v2/l4lb/{lb['id']}", what="delete load balancer")
    release_ip(LB_IP)
    for name, ip in ((P + "VM7-STATICNAT", STATIC_IP), (P + "DNAT-R12", PF_IP)):
        r = c.find("/api/v2/nat", name)
        c.ok("DELETE", f"/api/v2/nat/{r['id']}", what=f"delete {name}")
        release_ip(ip)
    # ACLs and route.
    ids = [a["id"] for a in c.ok("GET", f"/api/acl?vpc={vpc['id']}") if a["name"].startswith(P)]
    c.ok("DELETE", "/api/acl", {"id": ids, "tenantsID": [tenant["id"]]}, what="delete ACLs")
    r = c.find("/api/routes", P + "SR4", key="description")
    c.ok("DELETE", "/api/routes", {"id": r["id"]}, what="delete static route")
    # Tiers.
    for name, cidr, _, _ in TIERS:
        n = (c.find(f"/api/v2/vnet?vpc={vpc['id']}", name)
             or c.find(f"/api/v2/vnet?vpc={vpc['id']}", TIER2_RENAMED))
        c.ok("DELETE", f"/api/v2/vnet/{n['id']}", what=f"delete vnet {name}")
        s = next(s for s in c.ok("GET", "/api/v2/ipam/subnets") if s["name"] == name)
        c.ok("DELETE", f"/api/v2/ipam/subnet/{s['id']}", what=f"delete subnet {cidr}")
    # VPC: its source NAT, resources, allocation, the VPC.
    r = c.find("/api/v2/nat", P + "SNAT")
    c.ok("DELETE", f"/api/v2/nat/{r['id']}", what="delete source NAT")
    release_ip(SNAT_IP)
    release_ip(SNAT_IP2)
    c.ok("GET", f"/api/v2/vpc/{vpc['id']}/resources")
    a = next(a for a in c.ok("GET", "/api/v2/ipam/allocations") if a["vpc"]["id"] == vpc["id"])
    c.ok("DELETE", f"/api/v2/ipam/allocation/{a['id']}", what="delete VPC allocation")
    c.ok("DELETE", f"/api/v2/vpc/{vpc['id']}", what="delete VPC")
    c.expect(404, "GET", f"/api/v2/vpc/{vpc['id']}", what="the VPC is gone (404)")
    # Zone public range.
    s = next(s for s in c.ok("GET", "/api/v2/ipam/subnets") if s["name"] == ZONE_COMMON[0])
    c.ok("DELETE", f"/api/v2/ipam/subnet/{s['id']}", what="delete zone subnet")
    a = next(a for a in c.ok("GET", "/api/v2/ipam/allocations") if a["name"] == ZONE_ALLOC[0])
    c.ok("DELETE", f"/api/v2/ipam/allocation/{a['id']}", what="delete zone allocation")

    left = {p: c.ok("GET", p, what=f"list {p}") for p in
            ("/api/v2/vnet", "/api/v2/nat", "/api/v2/l4lb", "/api/acl", "/api/routes",
             "/api/v2/ipam/subnets", "/api/v2/ipam/allocations")}
    left = {p: x for p, x in left.items() if x}
    result(not left, "no REST object remains", json.dumps(left)[:400])
    vpcs = [x["name"] for x in c.ok("GET", "/api/v2/vpc")]
    result(vpcs == ["System VPC"], "only the System VPC remains", str(vpcs))


def main():
    c = Client(URL)
    try:
        {"setup": setup, "check": check, "acl-open": acl_open, "teardown": teardown,
         "lbacl-deny-internet": lbacl_deny_internet, "lbacl-permit-internet": lbacl_permit_internet,
         "lbacl-clear": lbacl_clear, "change": change, "rename": rename,
         "isolated": isolated, "iso-teardown": iso_teardown, "ipv6-setup": ipv6_setup,
         "ipv6-put": ipv6_put, "ipv6-teardown": ipv6_teardown, "ipv6-acl": ipv6_acl,
         "ipv6-acl-delete": ipv6_acl_delete}[PHASE](c)
    except SystemExit:
        pass
    except Exception as e:  # a crash is a failure, with its reason
        result(False, f"{PHASE} raised", repr(e))
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
