// pylvs status page: polls /api/v1/status and /api/v1/history, redraws. No innerHTML of data.
"use strict";

const REFRESH_MS = 1000;
const TOKEN_KEY = "pylvs-token";

function token() {
  // A TCP listener needs a bearer token; pass it as #token=... (fragments never reach servers).
  const m = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

const {si, sparkline, lineChart, segments, timeline} = window.pylvsCharts;
const RATE_KEYS = ["cps", "inpps", "outpps", "inbps", "outbps"];
const past = {step: 2, span: 900, keys: RATE_KEYS, samples: []};
const opened = new Set();  // services whose large charts are shown (kept across redraws)

function byteRate(v) { return si(v, "B/s"); }
function num(v) { return si(v, ""); }

// The API sends columns (one list per series, -1 where absent, states as change lists);
// the charts read rows, one per sample.
function toRows(doc) {
  const at = (changes, t, from) => {
    let i = from;
    while (i + 1 < changes.length && changes[i + 1][0] <= t) i++;
    return i;
  };
  const rows = doc.t.map((t) => ({t, services: {}, ha: null, drops: {}}));
  for (const [sid, svc] of Object.entries(doc.services)) {
    const servers = Object.entries(svc.servers || {});
    const cursors = servers.map(() => 0);
    rows.forEach((row, i) => {
      if (!svc.r || svc.r[0][i] < 0) return;
      const out = {r: svc.r.map((col) => col[i]), servers: {}};
      servers.forEach(([addr, srv], j) => {
        if (srv.r[0][i] < 0) return;
        cursors[j] = at(srv.states, row.t, cursors[j]);
        const st = srv.states[cursors[j]];
        const entry = {r: srv.r.map((col) => col[i]), s: st ? st[1] : "unknown"};
        if (st && st[2]) entry.why = st[2];
        out.servers[addr] = entry;
      });
      row.services[sid] = out;
    });
  }
  let h = 0;
  rows.forEach((row, i) => {
    h = at(doc.ha, row.t, h);
    const c = doc.ha[h];
    row.ha = c ? {role: c[1], peer: {state: c[2], role: c[3]}}
               : {role: "INIT", peer: {state: "none", role: null}};
    for (const [reason, col] of Object.entries(doc.drops)) {
      if (col[i] >= 0) row.drops[reason] = col[i];
    }
  });
  return rows;
}

function mergeHistory(doc) {
  past.step = doc.step;
  past.span = doc.span;
  past.keys = doc.rate_keys;
  const last = past.samples.length ? past.samples[past.samples.length - 1].t : -1;
  for (const s of toRows(doc)) if (s.t > last) past.samples.push(s);
  const newest = past.samples.length ? past.samples[past.samples.length - 1].t : 0;
  while (past.samples.length && past.samples[0].t <= newest - past.span) {
    past.samples.shift();
  }
}

function lastTime() {
  return past.samples.length ? past.samples[past.samples.length - 1].t : null;
}

// The charts' time window: the last 15 minutes, or since the first sample (at least a minute)
// while the director has not been up that long, so a young history is not a sliver.
function windowTimes() {
  const t1 = lastTime() || Date.now() / 1000;
  const first = past.samples.length ? past.samples[0].t : t1;
  const t0 = Math.max(t1 - past.span, Math.min(first, t1 - 60));
  return [t0, t1, past.samples.map((s) => s.t)];
}

function rateSeries(pick, key) {
  const k = past.keys.indexOf(key);
  return past.samples.map((s) => {
    const obj = pick(s);
    return obj && obj.r ? obj.r[k] : null;
  });
}

function svcPick(id) { return (s) => s.services[id]; }
function srvPick(id, addr) {
  return (s) => (s.services[id] ? s.services[id].servers[addr] : undefined);
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function peerText(peer) {
  if (!peer) return "none";
  if (typeof peer !== "object") return String(peer);
  const parts = [peer.node_id || peer.address || "?"];
  if (peer.role) parts.push(String(peer.role).toLowerCase());
  if (peer.alive !== undefined && peer.alive !== null) parts.push(peer.alive ? "alive" : "silent");
  return parts.join(" ");
}

function thresholds(rs) {
  if (!rs.upper_threshold && !rs.lower_threshold) return "–";
  return `${rs.upper_threshold || "∞"}/${rs.lower_threshold || "–"}`;
}

function serverRow(svc, rs) {
  const r = rs.rates || {};
  const [t0, t1, times] = windowTimes();
  const trend = sparkline(times, rateSeries(srvPick(svc.id, rs.address), "cps"), t0, t1,
                          `${rs.address}: connections/s, last 15 minutes`);
  const row = el("tr", {"class": rs.health, "data-server": rs.address, "data-health": rs.health},
    el("td", {}, rs.address),
    el("td", {"class": "health " + rs.health, title: rs.health_reason || ""}, rs.health),
    el("td", {"class": "trend"}, trend),
    el("td", {title: "effective / configured"}, `${rs.effective_weight}/${rs.weight}`),
    el("td", {"class": "hide-narrow", title: "upper / lower connection threshold (-x/-y)"},
       thresholds(rs)),
    el("td", {}, rs.active_conns),
    el("td", {"class": "hide-narrow"}, rs.inactive_conns),
    el("td", {"class": "hide-narrow"}, r.cps || 0),
    el("td", {"class": "hide-narrow"}, `${num(r.inpps || 0)}/${num(r.outpps || 0)}`),
    el("td", {"class": "hide-narrow"}, byteRate(r.inbps || 0)),
    el("td", {"class": "hide-narrow"}, byteRate(r.outbps || 0)));
  return row;
}

function serviceFlags(svc) {
  const flags = [svc.scheduler];
  if ((svc.flags || []).length) flags.push(`flags ${svc.flags.join(",")}`);
  if (svc.persistence) {
    const mask = svc.netmask && svc.netmask !== "255.255.255.255" ? ` mask ${svc.netmask}` : "";
    flags.push(`persistent ${svc.persistence} s${mask}`);
  }
  if (svc.sorry_server) flags.push(`sorry ${svc.sorry_server}`);
  return flags;
}

function serviceCharts(svc) {
  const [t0, t1, times] = windowTimes();
  const pick = svcPick(svc.id);
  const box = el("div", {"class": "charts", "data-charts": svc.id});
  box.append(
    lineChart("connections/s", times, [{name: "conn/s", values: rateSeries(pick, "cps")}],
              t0, t1, (v) => num(v) + "/s"),
    lineChart("packets/s", times, [{name: "in", values: rateSeries(pick, "inpps")},
                                   {name: "out", values: rateSeries(pick, "outpps")}],
              t0, t1, (v) => num(v) + "/s"),
    lineChart("bytes/s (1 kB = 1000 B)", times,
              [{name: "in", values: rateSeries(pick, "inbps")},
               {name: "out", values: rateSeries(pick, "outbps")}], t0, t1, byteRate),
    lineChart("connections/s per real server", times, (svc.real_servers || []).map((rs) => ({
      name: rs.address, values: rateSeries(srvPick(svc.id, rs.address), "cps")})),
    t0, t1, (v) => num(v) + "/s"));
  const tl = el("div", {"class": "timelines"}, el("h3", {}, "server health, 15 minutes"));
  for (const rs of svc.real_servers || []) {
    const states = past.samples.map((s) => {
      const srv = srvPick(svc.id, rs.address)(s);
      return srv ? {state: srv.s, why: srv.why} : null;
    });
    tl.append(timeline(rs.address, segments(times, states, past.step), t0, t1 + past.step,
                       {"data-server": rs.address}));
  }
  box.append(tl);
  return box;
}

function serviceSection(svc) {
  const servers = svc.real_servers || [];
  const up = servers.filter((rs) => rs.health === "up").length;
  const r = svc.rates || {};
  const [t0, t1, times] = windowTimes();
  const head = el("tr", {},
    el("th", {}, "server"), el("th", {}, "health"), el("th", {"class": "trend", title: "connections/s, last 15 minutes"}, "conn/s, 15 min"),
    el("th", {}, "weight"),
    el("th", {"class": "hide-narrow", title: "upper/lower connection threshold"}, "thresh"),
    el("th", {}, "active"), el("th", {"class": "hide-narrow"}, "inactive"),
    el("th", {"class": "hide-narrow"}, "conn/s"), el("th", {"class": "hide-narrow"}, "pkt/s in/out"),
    el("th", {"class": "hide-narrow"}, "in"), el("th", {"class": "hide-narrow"}, "out"));
  const isOpen = opened.has(svc.id);
  const toggle = el("button", {"class": "toggle", type: "button", "aria-expanded": String(isOpen),
                               "data-toggle": svc.id}, isOpen ? "hide charts" : "charts");
  toggle.addEventListener("click", () => {
    if (opened.has(svc.id)) opened.delete(svc.id); else opened.add(svc.id);
    renderLast();
  });
  const section = el("section", {"class": "service", "data-service": svc.id},
    el("div", {"class": "svc-head"},
      el("h2", {}, `${String(svc.protocol).toUpperCase()} ${svc.address}`), toggle),
    el("div", {"class": "meta"}, `${serviceFlags(svc).join(" · ")} · ${up}/${servers.length} up`),
    el("div", {"class": "meta rates"},
      el("span", {}, `${r.cps || 0} conn/s · ${num(r.inpps || 0)}/${num(r.outpps || 0)} pkt/s ` +
                     `in/out · ${byteRate(r.inbps || 0)} in · ${byteRate(r.outbps || 0)} out`),
      sparkline(times, rateSeries(svcPick(svc.id), "cps"), t0, t1,
                `${svc.id}: connections/s, last 15 minutes`)),
    el("div", {"class": "scroll"},
      el("table", {}, el("thead", {}, head),
         el("tbody", {}, ...servers.map((rs) => serverRow(svc, rs))))));
  if (isOpen) section.append(serviceCharts(svc));
  return section;
}

function directorCharts() {
  const [t0, t1, times] = windowTimes();
  const box = el("div", {"class": "charts director"});
  const roles = past.samples.map((s) => ({state: s.ha.role}));
  const peers = past.samples.map((s) => ({
    state: s.ha.peer.state === "none" ? "none"
      : `${s.ha.peer.state}${s.ha.peer.role ? " " + s.ha.peer.role.toLowerCase() : ""}`}));
  box.append(
    // A timeline's last state lasts until the next sample: its band ends one step after t1.
    timeline("HA role", segments(times, roles, past.step), t0, t1 + past.step,
             {id: "ha-timeline"}),
    timeline("peer", segments(times, peers, past.step), t0, t1 + past.step,
             {id: "peer-timeline"}));
  // Only the reasons that dropped something in the window: the engine knows twenty.
  const reasons = new Set();
  for (const s of past.samples) {
    for (const [k, v] of Object.entries(s.drops)) if (v > 0) reasons.add(k);
  }
  const series = [...reasons].sort().map((k) => ({
    name: k.replace(/_/g, " "), values: past.samples.map((s) => (k in s.drops ? s.drops[k]
                                                                              : null))}));
  const drops = series.length ? lineChart("drops/s by reason", times, series, t0, t1,
                                          (v) => num(v) + "/s")
                              : el("p", {"class": "muted"}, "no drops in the last 15 minutes");
  drops.id = "drops-chart";
  box.append(drops);
  return box;
}

let lastStatus = null;

function renderLast() {
  if (lastStatus) render(lastStatus);
}

const MODE_WORDS = ["off", "auto", "ENGAGED", "on"];

function defenseText(dfn) {
  if (!dfn) return "";
  const modes = Object.entries(dfn.mode || {}).map(([k, v]) => `${k} ${MODE_WORDS[v] || v}`);
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
  return `${modes.join(", ")}; ${dfn.evict_embryonic ? "evict on" : "evict off"}; ` +
    `${syncookiesText(dfn.syncookies)}; ` +
    `entries dropped ${sum(dfn.entries_dropped)}, packets dropped ${sum(dfn.packets_dropped)}`;
}

function syncookiesText(sc) {
  if (!sc) return "syncookies ?";
  const mode = ["off", "auto", "on"][sc.mode] || sc.mode;
  const refused = Object.values(sc.acks_refused || {}).reduce((a, b) => a + b, 0);
  return `syncookies ${mode}${sc.engaged ? " ENGAGED" : ""} ` +
    `(syns ${sc.syns || 0}, acks ${sc.acks_accepted || 0}, refused ${refused})`;
}

function render(status) {
  lastStatus = status;
  const ha = status.ha || {};
  const eng = status.engine || {};
  text("node", ha.node_id || "");
  const role = String(ha.role || "?").toLowerCase();
  const roleEl = document.getElementById("role");
  roleEl.textContent = role.toUpperCase();
  roleEl.className = "role " + role;
  text("peer", peerText(ha.peer));
  text("transitions", ha.transitions || 0);
  text("connections", eng.connections || 0);
  text("drops", Object.values(eng.drops || {}).reduce((a, b) => a + b, 0));
  text("defense", defenseText(status.defense));
  const cl = status.cluster || {};
  const clEl = document.getElementById("cluster");
  if (cl.mode === "active-active") {
    const routers = (cl.routers || []).map((r) =>
      `${r.address} AS ${r.asn} BGP ${r.state || "?"} BFD ${r.bfd || "-"}` +
      (r.last_error ? ` (${r.last_error})` : ""));
    const members = ((cl.members || {}).members || []).map((m) =>
      `${m.node_id || "?"} ${m.address} ` +
      (m.alive ? "alive" : m.last_seen_ago === null ? "never heard" : "DEAD") +
      (m.last_seen_ago === null ? "" : ` (${m.last_seen_ago.toFixed(1)} s ago)`) +
      (m.draining ? " draining" : ` announces ${(m.announced || []).join(", ") || "nothing"}`));
    clEl.textContent = `cluster AS ${cl.asn} · ${cl.draining ? "draining" : "announcing"} ` +
      `${(cl.announced || []).join(", ") || "nothing"} · ${routers.join(" · ")}` +
      (members.length ? ` · members: ${members.join(" · ")}` : "") +
      (cl.error ? ` · error: ${cl.error}` : "");
    clEl.hidden = false;
  } else {
    clEl.hidden = true;
  }
  const rates = eng.rates || {};
  text("pps", `${num(rates.inpps || 0)}/${num(rates.outpps || 0)}`);
  document.getElementById("history").replaceChildren(directorCharts());
  const services = status.services || [];
  const main = document.getElementById("services");
  main.replaceChildren(...(services.length ? services.map(serviceSection)
                                            : [el("p", {}, "no virtual services")]));
  text("updated", new Date().toLocaleTimeString());
}

async function getJson(path, headers) {
  const resp = await fetch(path, {headers, cache: "no-store"});
  if (resp.status === 401) {
    const err = new Error("token");
    err.unauthorized = true;
    throw err;
  }
  if (!resp.ok) throw new Error("HTTP " + resp.status);
  return resp.json();
}

async function refresh() {
  const state = document.getElementById("conn-state");
  const headers = {Accept: "application/json"};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  try {
    const since = lastTime();
    const [status, hist] = await Promise.all([
      getJson("/api/v1/status", headers),
      getJson("/api/v1/history" + (since === null ? "" : "?since=" + since), headers)]);
    mergeHistory(hist);
    render(status);
    state.textContent = "live";
    state.className = "conn-state";
  } catch (err) {
    if (err.unauthorized) {
      state.textContent = "a token is required: open this page as …/#token=YOUR_TOKEN";
      state.className = "conn-state error";
      return;
    }
    state.textContent = "director unreachable, retrying…";
    state.className = "conn-state error";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", refresh);
