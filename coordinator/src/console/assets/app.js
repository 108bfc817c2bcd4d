// StackFabric web console: renders the coordinator's /api/events documents and sends the
// operator's actions to /api/action. Hand-written, no libraries; every value from the server
// is put into the page as text (textContent, SVG attributes), never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
let events = null;
let role = "reader";

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k === "onclick") e.addEventListener("click", v);
    else if (k === "style") e.style.cssText = v; // CSSOM: allowed by the page's CSP

    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

// POST with the header that proves the request came from this page (CSRF).
async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-SF-Console": "1" },
    body: JSON.stringify(body),
  });
  let doc = {};
  try { doc = await r.json(); } catch (_) { /* empty answer */ }
  if (!r.ok) throw new Error(doc.error || r.statusText);
  return doc;
}

function say(text, isError) {
  const m = $("#message");
  m.textContent = text;
  m.className = isError ? "error" : "ok";
}

async function act(body) {
  try {
    const r = await post("/api/action", body);
    say(`${body.action.replace("_", " ")} done (revision ${r.revision})`, false);
    return true;
  } catch (e) {
    say(e.message, true);
    return false;
  }
}

// ------------------------------------------------------------------ topology

const ROWS = { edge: 0, spine: 1, leaf: 2, hypervisor: 3, gateway: 3 };

function linkClass(state) {
  const s = state.toLowerCase();
  if (s === "up" || s === "established") return "link-up";
  if (s === "external" || s === "unknown") return "link-unknown";
  return "link-down";
}

// A link's tooltip: its state, and for a fabric link the BGP session as each end reports it.
function linkTip(l) {
  const ends = (l.ends || []).map((e) => {
    const pfx = (e.prefixes || []).map((p) => `${p.family} ${p.received}/${p.sent}`).join(", ");
    const state = e.state || (e.lease === "up" ? "not reported" : "lease down");
    return `\n${e.node}: ${state}${pfx ? ` (rcvd/sent ${pfx})` : ""}`;
  });
  return `${l.a} - ${l.b}: ${l.state}${ends.join("")}`;
}

// The fleet table's BGP cell: sessions Established of those reported.
function bgpCell(n) {
  if (n.bgp_error) return "?";
  const s = n.bgp_sessions || [];
  if (!s.length) return "-";
  const down = s.filter((x) => x.state !== "Established").map((x) => `${x.peer} ${x.state}`);
  return `${s.length - down.length}/${s.length}` + (down.length ? ` (${down.join(", ")})` : "");
}

function drawTopology(doc) {
  const svg = $("#topology");
  const width = 960, rowH = 90, boxW = 96, boxH = 34;
  const rows = [[], [], [], []];
  for (const n of doc.nodes) rows[ROWS[n.tier] ?? 3].push(n);
  const pos = {};
  rows.forEach((row, r) => {
    row.sort((a, b) => (a.tier === b.tier ? a.name.localeCompare(b.name) : a.tier === "gateway" ? 1 : -1));
    row.forEach((n, i) => {
      pos[n.name] = { x: ((i + 0.5) * width) / row.length, y: 30 + r * rowH };
    });
  });
  svg.setAttribute("viewBox", `0 0 ${width} ${rows.length * rowH}`);
  svg.replaceChildren();
  for (const l of doc.links) {
    const a = pos[l.a], b = pos[l.b];
    if (!a || !b) continue;
    const line = el("svg:line", {
      x1: a.x, y1: a.y, x2: b.x, y2: b.y,
      class: `link ${linkClass(l.state)}`, "data-a": l.a, "data-b": l.b, "data-state": l.state,
    });
    line.append(el("svg:title", { text: linkTip(l) }));
    svg.append(line);
  }
  for (const n of doc.nodes) {
    const p = pos[n.name];
    const g = el("svg:g", {
      class: `node role-${n.role} state-${n.state}${n.drained ? " drained" : ""}`,
      "data-name": n.name, transform: `translate(${p.x - boxW / 2},${p.y - boxH / 2})`,
    });
    const tip = n.role === "edge" || n.role === "customer-dc"
      ? `${n.name} (${n.role})`
      : `${n.name}: ${n.role}, lease ${n.lease}, applied ${n.applied_revision} / desired ${n.desired_revision}` +
        (n.drained ? ", drained" : "") + (n.serving && n.serving.length ? `, serving ${n.serving.join(" ")}` : "");
    g.append(el("svg:title", { text: tip }));
    g.append(el("svg:rect", { width: boxW, height: boxH, rx: 6 }));
    const label = n.name.length > 14 ? n.name.slice(0, 13) + "…" : n.name;
    g.append(el("svg:text", { x: boxW / 2, y: boxH / 2 + 5, "text-anchor": "middle", class: "label", text: label }));
    svg.append(g);
  }
}

// ------------------------------------------------------------------ fleet

function drawFleet(doc) {
  const body = $("#fleet tbody");
  body.replaceChildren();
  for (const n of doc.nodes.filter((n) => n.role !== "edge" && n.role !== "customer-dc")) {
    let button = null;
    if (n.role === "gateway" && role === "admin") {
      const verb = n.drained ? "undrain" : "drain";
      button = el("button", {
        id: `${verb}-${n.name}`, text: verb === "drain" ? "Drain" : "Undrain",
        onclick: () => act({ action: verb, name: n.name }),
      });
    }
    body.append(el("tr", { class: `state-${n.state}`, "data-name": n.name },
      el("td", { text: n.name }),
      el("td", { text: n.role + (n.drained ? " (drained)" : "") }),
      el("td", { text: n.lease }),
      el("td", { text: String(n.applied_revision) }),
      el("td", { text: String(n.desired_revision) }),
      el("td", { text: n.in_sync ? "yes" : "no" }),
      el("td", { class: "bgp", text: bgpCell(n), title: n.bgp_error || "" }),
      el("td", { text: (n.errors || []).join("; ") }),
      el("td", {}, button)));
  }
}

// ------------------------------------------------------------------ latency

const ROLE_COLOURS = { hypervisor: "#1565c0", gateway: "#6a1b9a", switch: "#00838f" };

function drawLatency(doc) {
  const svg = $("#latency");
  const W = 960, H = 200, pad = 40;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const now = Date.now(), span = 10 * 60 * 1000;
  let max = 1;
  for (const pts of Object.values(doc.latency)) for (const p of pts) max = Math.max(max, p.p99);
  const x = (t) => pad + ((t - (now - span)) / span) * (W - 2 * pad);
  const y = (v) => H - pad + 10 - (v / max) * (H - pad - 10);
  svg.append(el("svg:line", { x1: pad, y1: y(0), x2: W - pad, y2: y(0), class: "axis" }));
  svg.append(el("svg:text", { x: 2, y: y(max) + 4, class: "tick", text: `${Math.round(max)} ms` }));
  svg.append(el("svg:text", { x: 2, y: y(0), class: "tick", text: "0" }));
  svg.append(el("svg:text", { x: pad, y: H - 4, class: "tick", text: "-10 min" }));
  svg.append(el("svg:text", { x: W - pad - 20, y: H - 4, class: "tick", text: "now" }));
  const legend = $("#latency-legend");
  legend.replaceChildren();
  for (const [r, pts] of Object.entries(doc.latency)) {
    const colour = ROLE_COLOURS[r] || "#555";
    for (const q of ["p50", "p99"]) {
      const line = pts.map((p) => `${x(p.t).toFixed(1)},${y(p[q]).toFixed(1)}`).join(" ");
      svg.append(el("svg:polyline", { points: line, stroke: colour, class: `series ${q}`, "data-role": r }));
    }
    const last = pts[pts.length - 1];
    legend.append(el("span", { class: "key", style: `color:${colour}`,
      text: `${r}: p50 ${last.p50} ms, p99 ${last.p99} ms (last 10 s, ${last.n} acks)` }));
  }
  if (!Object.keys(doc.latency).length) legend.append(el("span", { text: "no acks in the last 10 minutes" }));
}

// ------------------------------------------------------------------ tenants

function del(action, obj, what) {
  if (role !== "admin") return null;
  return el("button", { class: "delete", text: "Delete", title: `delete ${what}`,
    onclick: () => act(Object.assign({ action }, obj)) });
}

function drawTenants(doc) {
  const root = $("#tenants");
  const ul = el("ul", { class: "tree" });
  for (const t of doc.tenants) {
    const vpcs = el("ul");
    for (const { vpc, tiers } of t.vpcs) {
      const gw = `serving ${vpc.primary_gateway || "none"}, standby ${vpc.standby_gateway || "none"}`;
      const tierList = el("ul");
      for (const { tier, ports } of tiers) {
        const portList = el("ul");
        for (const p of ports) {
          portList.append(el("li", { class: "port", text: `${p.name} ${p.ip} on ${p.node}${p.interface ? " " + p.interface : ""}` }));
        }
        tierList.append(el("li", { class: "tier", "data-tier": `${tier.tenant}/${tier.vpc}/${tier.name}` },
          el("span", { text: `${tier.name} ${tier.cidr} VNI ${tier.vni} gw ${tier.gateway} ` }),
          del("delete_network", { tenant: tier.tenant, vpc: tier.vpc, name: tier.name }, `tier ${tier.name}`),
          portList));
      }
      vpcs.append(el("li", { class: "vpc", "data-vpc": `${vpc.tenant}/${vpc.name}` },
        el("span", { class: "vpc-name", text: `${vpc.name} ${vpc.cidr} (id ${vpc.id}) - ${gw} ` }),
        del("delete_vpc", { tenant: vpc.tenant, name: vpc.name }, `VPC ${vpc.name}`),
        tierList));
    }
    ul.append(el("li", { class: "tenant" }, el("strong", { text: t.name }), vpcs));
  }
  root.replaceChildren(ul);
}

// ------------------------------------------------------------------ services

function natText(r) {
  const k = r.kind || {};
  if (k.Snat) return ["snat", `${r.vpc} -> ${k.Snat.public_ip}`];
  if (k.StaticNat) return ["static nat", `${k.StaticNat.public_ip} <-> ${k.StaticNat.private_ip}`];
  if (k.PortForward) {
    const p = k.PortForward;
    return ["port forward", `${p.public_ip}:${p.public_port}/${p.protocol} -> ${p.private_ip}:${p.private_port}`];
  }
  return ["?", ""];
}

function rows(sel, items, cells) {
  const body = $(`${sel} tbody`);
  body.replaceChildren(...items.map((i) => el("tr", {}, ...cells(i).map((c) =>
    c instanceof Node ? el("td", {}, c) : el("td", { text: c == null ? "" : String(c) })))));
}

function drawServices(doc) {
  rows("#nat", doc.nat, (r) => [`${r.tenant}/${r.vpc}`, r.name, ...natText(r),
    del("delete_nat", { tenant: r.tenant, vpc: r.vpc, name: r.name }, `NAT rule ${r.name}`)]);
  rows("#lbs", doc.load_balancers, (l) => [`${l.tenant}/${l.vpc}`, l.name, `${l.vip}:${l.port}/${l.protocol}`,
    l.gateway, l.table_digest ? l.table_digest.slice(0, 16) : "",
    l.backends.map((b) => `${b.ip}:${b.port} w${b.weight} ${b.health || "unknown"}`).join(", "),
    del("delete_lb", { tenant: l.tenant, vpc: l.vpc, name: l.name }, `load balancer ${l.name}`)]);
  rows("#acls", doc.acls, (a) => [`${a.tenant}/${a.vpc}`, a.name, a.tiers.join(", "), a.default_action,
    a.rules.map((r) => `#${r.number} ${r.direction} ${r.action} ${r.protocol} ${r.cidrs.join(" ")}`).join("; ")]);
  rows("#dcs", doc.direct_connects, (d) => [`${d.tenant}/${d.vpc}`, d.name, `${d.switch} ${d.interface}`,
    d.gateway, d.bgp_state || "unknown", `${d.prefixes_received}/${d.prefixes_accepted}/${d.prefixes_sent}`]);
}

function render(doc) {
  role = doc.role;
  document.body.classList.toggle("reader", role !== "admin");
  const down = doc.nodes.filter((n) => n.state === "down").length;
  $("#summary").textContent = `revision ${doc.revision} - leader ${doc.leader || "none"} - served by ` +
    `${doc.served_by} - ${doc.nodes.filter((n) => n.lease).length} nodes, ${down} down - you are ${role}`;
  drawTopology(doc);
  drawFleet(doc);
  drawLatency(doc);
  drawTenants(doc);
  drawServices(doc);
}

// ------------------------------------------------------------------ session and live stream

function live(state) {
  const l = $("#live");
  l.textContent = state;
  l.className = `live ${state === "live" ? "on" : "off"}`;
}

function start() {
  $("#login-panel").hidden = true;
  $("#console").hidden = false;
  $("#logout").hidden = false;
  if (events) events.close();
  events = new EventSource("/api/events");
  events.addEventListener("state", (e) => render(JSON.parse(e.data)));
  events.onopen = () => live("live");
  events.onerror = async () => {
    live("reconnecting");
    const me = await fetch("/api/me", { credentials: "same-origin" });
    if (me.status === 401) showLogin();
  };
}

function showLogin() {
  if (events) events.close();
  events = null;
  live("offline");
  $("#console").hidden = true;
  $("#logout").hidden = true;
  $("#login-panel").hidden = false;
}

function formObject(form) {
  const o = { action: form.dataset.action };
  for (const [k, v] of new FormData(form).entries()) o[k] = v;
  return o;
}

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await post("/api/login", {
        user: $("#login-user").value, password: $("#login-password").value, token: $("#login-token").value,
      });
      $("#login-error").textContent = "";
      $("#login-password").value = "";
      $("#login-token").value = "";
      start();
    } catch (err) {
      $("#login-error").textContent = err.message;
    }
  });
  $("#logout").addEventListener("click", async () => {
    await post("/api/logout", {}).catch(() => {});
    showLogin();
  });
  for (const form of document.querySelectorAll("form.action")) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (await act(formObject(form))) form.reset();
    });
  }
  const me = await fetch("/api/me", { credentials: "same-origin" });
  if (me.ok) start(); else showLogin();
});
