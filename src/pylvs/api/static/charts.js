// pylvs status page: small SVG charts (line charts, sparklines, state timelines). No library.
// Every function returns a new SVG element; data never goes through innerHTML.
(function () {
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

// SI units, so "kB/s" always means 1000 bytes per second (stated in the page's footer).
function si(v, unit) {
  const prefixes = ["", "k", "M", "G", "T"];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < prefixes.length - 1) { v /= 1000; i++; }
  const num = i === 0 ? (Number.isInteger(v) ? String(v) : v.toFixed(1))
                      : (Math.abs(v) < 10 ? v.toFixed(1) : String(Math.round(v)));
  // A no-break space keeps "5.5 kB/s" on one line.
  return unit ? `${num}\u00a0${prefixes[i]}${unit}` : num + prefixes[i];
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit",
                                                     second: "2-digit"});
}

// Points of one series as polyline segments; null values break the line.
function paths(times, values, x, y) {
  const runs = [];
  let cur = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) {
      if (cur.length) runs.push(cur);
      cur = [];
    } else {
      cur.push(`${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`);
    }
  });
  if (cur.length) runs.push(cur);
  // A lone point is drawn as a tiny segment so it stays visible.
  return runs.map((r) => (r.length === 1 ? [r[0], r[0].replace(/^([\d.]+)/, (m) =>
    String(Number(m) + 1.5))] : r).join(" "));
}

function maxOf(series) {
  let m = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > m) m = v;
  return m;
}

// A sparkline: one series, no axes; the title tells the last value.
function sparkline(times, values, t0, t1, label) {
  const w = 100, h = 24;
  const m = maxOf([{values}]) || 1;
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * w;
  const y = (v) => h - 1 - (v / m) * (h - 2);
  const svg = svgEl("svg", {"class": "spark", viewBox: `0 0 ${w} ${h}`,
                            preserveAspectRatio: "none", role: "img",
                            "data-points": values.filter((v) => v !== null).length},
    svgEl("title", {}, label));
  for (const p of paths(times, values, x, y)) {
    svg.append(svgEl("polyline", {points: p, "class": "s0"}));
  }
  return svg;
}

// A line chart with a y scale, a time axis and a legend (in HTML, so it wraps on a phone).
function lineChart(title, times, series, t0, t1, fmt) {
  const w = 600, h = 150, left = 4, right = 4, top = 6, bottom = 16;
  const m = maxOf(series) || 1;
  const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * (w - left - right);
  const y = (v) => top + (1 - v / m) * (h - top - bottom);
  const svg = svgEl("svg", {"class": "chart", viewBox: `0 0 ${w} ${h}`,
                            preserveAspectRatio: "none", role: "img"},
    svgEl("title", {}, title));
  for (const frac of [0, 0.5, 1]) {
    svg.append(svgEl("line", {x1: left, x2: w - right, y1: y(m * frac), y2: y(m * frac),
                              "class": "grid"}));
  }
  series.forEach((s, i) => {
    for (const p of paths(times, s.values, x, y)) {
      svg.append(svgEl("polyline", {points: p, "class": "s" + (i % 5), "data-series": s.name}));
    }
  });
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, i) => {
    const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
    const item = document.createElement("span");
    item.className = "key s" + (i % 5);
    item.textContent = `${s.name} ${last === undefined ? "–" : fmt(last)}`;
    legend.append(item);
  });
  const fig = document.createElement("figure");
  fig.className = "chart";
  const cap = document.createElement("figcaption");
  cap.textContent = `${title} (max ${fmt(m)})`;
  const axis = document.createElement("div");
  axis.className = "axis";
  for (const t of [t0, (t0 + t1) / 2, t1]) {
    const s = document.createElement("span");
    s.textContent = clock(t);
    axis.append(s);
  }
  fig.append(cap, svg, axis, legend);
  return fig;
}

// Consecutive samples with the same state (and reason) as one segment [from, to).
function segments(times, states, step) {
  const out = [];
  states.forEach((st, i) => {
    const to = i + 1 < times.length ? times[i + 1] : times[i] + step;
    const prev = out[out.length - 1];
    if (st === null) return;
    if (prev && prev.state === st.state && prev.why === (st.why || "") && prev.to >= times[i]) {
      prev.to = to;
    } else {
      out.push({from: times[i], to, state: st.state, why: st.why || ""});
    }
  });
  return out;
}

// A state timeline: one coloured band per segment, its title (hover) says what and why.
function timeline(label, segs, t0, t1, attrs) {
  const w = 600, h = 14;
  const x = (t) => ((Math.min(t1, Math.max(t0, t)) - t0) / Math.max(1, t1 - t0)) * w;
  const svg = svgEl("svg", {"class": "timeline", viewBox: `0 0 ${w} ${h}`,
                            preserveAspectRatio: "none", role: "img", ...attrs},
    svgEl("title", {}, label));
  for (const s of segs) {
    if (s.to <= t0) continue;
    const what = `${label}: ${s.state} ${clock(s.from)}–${clock(s.to)}` +
                 (s.why ? ` (${s.why})` : "");
    svg.append(svgEl("rect", {x: x(s.from).toFixed(1), y: 0,
                              width: Math.max(1, x(s.to) - x(s.from)).toFixed(1), height: h,
                              "class": "st " + s.state.toLowerCase(), "data-state": s.state},
      svgEl("title", {}, what)));
  }
  const row = document.createElement("div");
  row.className = "tl-row";
  const name = document.createElement("span");
  name.className = "tl-name";
  name.textContent = label;
  const last = segs[segs.length - 1];
  const now = document.createElement("span");
  now.className = "tl-now " + (last ? last.state.toLowerCase() : "");
  now.textContent = last ? last.state + (last.why ? `: ${last.why}` : "") : "no data";
  row.append(name, svg, now);
  return row;
}

window.pylvsCharts = {si, sparkline, lineChart, segments, timeline};
}());
