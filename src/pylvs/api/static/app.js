// pylvs status page: polls /api/v1/status and redraws. No framework, no innerHTML of data.
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

function bytes(v) {
  const units = ["B", "K", "M", "G", "T"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)) + units[i];
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

function serverRow(rs) {
  const r = rs.rates || {};
  const row = el("tr", {"class": rs.health, "data-server": rs.address, "data-health": rs.health},
    el("td", {}, rs.address),
    el("td", {"class": "health " + rs.health, title: rs.health_reason || ""}, rs.health),
    el("td", {title: "effective / configured"}, `${rs.effective_weight}/${rs.weight}`),
    el("td", {}, rs.active_conns),
    el("td", {}, rs.inactive_conns),
    el("td", {"class": "hide-narrow"}, r.cps || 0),
    el("td", {"class": "hide-narrow"}, bytes(r.inbps || 0) + "/s"),
    el("td", {"class": "hide-narrow"}, bytes(r.outbps || 0) + "/s"));
  return row;
}

function serviceSection(svc) {
  const servers = svc.real_servers || [];
  const up = servers.filter((rs) => rs.health === "up").length;
  const r = svc.rates || {};
  const flags = [svc.scheduler];
  if (svc.persistence) flags.push(`persistent ${svc.persistence}`);
  const head = el("tr", {},
    el("th", {}, "server"), el("th", {}, "health"), el("th", {}, "weight"),
    el("th", {}, "active"), el("th", {}, "inactive"), el("th", {"class": "hide-narrow"}, "conn/s"),
    el("th", {"class": "hide-narrow"}, "in"), el("th", {"class": "hide-narrow"}, "out"));
  return el("section", {"class": "service", "data-service": svc.id},
    el("h2", {}, `${String(svc.protocol).toUpperCase()} ${svc.address}`),
    el("div", {"class": "meta"},
      `${flags.join(" · ")} · ${up}/${servers.length} up · ${r.cps || 0} conn/s · ` +
      `in ${bytes(r.inbps || 0)}/s · out ${bytes(r.outbps || 0)}/s`),
    el("div", {"class": "scroll"},
      el("table", {}, el("thead", {}, head), el("tbody", {}, ...servers.map(serverRow)))));
}

function render(status) {
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
  const cl = status.cluster || {};
  const clEl = document.getElementById("cluster");
  if (cl.mode === "active-active") {
    const routers = (cl.routers || []).map((r) =>
      `${r.address} AS ${r.asn} BGP ${r.state || "?"} BFD ${r.bfd || "-"}` +
      (r.last_error ? ` (${r.last_error})` : ""));
    clEl.textContent = `cluster AS ${cl.asn} · ${cl.draining ? "draining" : "announcing"} ` +
      `${(cl.announced || []).join(", ") || "nothing"} · ${routers.join(" · ")}` +
      (cl.error ? ` · error: ${cl.error}` : "");
    clEl.hidden = false;
  } else {
    clEl.hidden = true;
  }
  const services = status.services || [];
  const main = document.getElementById("services");
  main.replaceChildren(...(services.length ? services.map(serviceSection)
                                            : [el("p", {}, "no virtual services")]));
  text("updated", new Date().toLocaleTimeString());
}

async function refresh() {
  const state = document.getElementById("conn-state");
  const headers = {Accept: "application/json"};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  try {
    const resp = await fetch("/api/v1/status", {headers, cache: "no-store"});
    if (resp.status === 401) {
      state.textContent = "a token is required: open this page as …/#token=YOUR_TOKEN";
      state.className = "conn-state error";
      return;
    }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
    state.textContent = "live";
    state.className = "conn-state";
  } catch (err) {
    state.textContent = "director unreachable, retrying…";
    state.className = "conn-state error";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", refresh);
