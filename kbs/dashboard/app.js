// The KBS dashboard: reads /dashboard/api/summary with the admin token the
// user pasted and draws it. Every text goes in through textContent (resource
// paths and names come from clients and admins), and the plots are SVG
// elements built here: the page loads nothing from anywhere else.
"use strict";

const TOKEN_KEY = "kbs-admin-token";
const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 15000;

// Colours of appraisal statuses and of resource request outcomes; other
// outcomes take one of the spare colours by name.
const COLOURS = {
  affirming: "#2e7d32", warning: "#f9a825", contraindicated: "#c62828", none: "#78909c", failure: "#6a1b9a",
  released: "#2e7d32", PolicyDeny: "#c62828", TokenNotFound: "#ef6c00", TokenVerifierError: "#8d6e63",
  ResourceNotFound: "#546e7a", PluginInternalError: "#546e7a", PolicyEngineError: "#ad1457", JweError: "#5e35b1", InternalError: "#212121",
};
const SPARE = ["#1565c0", "#00838f", "#9e9d24", "#d81b60", "#4e342e", "#283593"];

function colour(name) {
  if (COLOURS[name]) return COLOURS[name];
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return SPARE[h % SPARE.length];
}

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function fmtTime(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function fmtDate(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

// niceMax rounds a count up to 1, 2, 4, 6 or 8 times a power of ten, so that
// its half, the middle grid line, is a whole number too.
function niceMax(v) {
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function empty(node, message) {
  node.replaceChildren(el("p", { class: "muted empty" }, message));
}

// timeBars draws series of per-minute points as stacked bars over the
// window, one rect per point.
function timeBars(node, win, series, label) {
  const points = series.reduce((n, s) => n + s.points.length, 0);
  if (points === 0) return empty(node, "Nothing in the last 3 hours.");
  const W = 1200, H = 220, L = 44, R = 8, T = 10, B = 26;
  const pw = W - L - R, ph = H - T - B, bw = pw / win.buckets;
  const totals = new Map();
  for (const s of series) for (const [t, n] of s.points) totals.set(t, (totals.get(t) || 0) + n);
  const max = niceMax(Math.max(...totals.values()));
  const x = (t) => L + ((t - win.start) / win.step_seconds) * bw;
  const y = (n) => T + ph - (n / max) * ph;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  for (const v of max > 1 ? [0, max / 2, max] : [0, max]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "gridline" }));
    root.append(svg("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, v));
  }
  const end = win.start + win.buckets * win.step_seconds;
  for (let t = Math.ceil(win.start / 1800) * 1800; t < end; t += 1800) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: T + ph, y2: T + ph + 4, class: "tick" }));
    root.append(svg("text", { x: x(t), y: H - 6, class: "axis", "text-anchor": "middle" }, fmtTime(t)));
  }
  const stacked = new Map();
  for (const s of series) {
    for (const [t, n] of s.points) {
      const below = stacked.get(t) || 0;
      stacked.set(t, below + n);
      const r = svg("rect", { class: "bar", x: x(t) + 0.5, y: y(below + n), width: Math.max(bw - 1, 1),
        height: y(below) - y(below + n), fill: colour(s.key), "data-series": s.name, "data-t": t, "data-n": n });
      r.append(svg("title", {}, `${fmtTime(t)} ${s.name}: ${n}`));
      root.append(r);
    }
  }
  root.append(svg("line", { x1: L, x2: W - R, y1: T + ph, y2: T + ph, class: "axisline" }));
  node.replaceChildren(root);
}

// rowBars draws one horizontal stacked bar per row, one rect per segment.
function rowBars(node, rows, label, emptyText) {
  if (rows.length === 0) return empty(node, emptyText);
  const W = 520, L = 170, R = 48, row = 24, T = 4;
  const H = T * 2 + rows.length * row;
  const max = Math.max(...rows.map((r) => r.segments.reduce((n, s) => n + s.n, 0)), 1);
  const scale = (W - L - R) / max;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  rows.forEach((r, i) => {
    const y = T + i * row;
    const name = r.name.length > 26 ? "…" + r.name.slice(-25) : r.name;
    const t = svg("text", { x: L - 8, y: y + 16, class: "label", "text-anchor": "end" }, name);
    t.append(svg("title", {}, r.name));
    root.append(t);
    let x = L;
    for (const s of r.segments) {
      const w = Math.max(s.n * scale, s.n > 0 ? 2 : 0);
      const rect = svg("rect", { class: "bar", x, y: y + 4, width: w, height: row - 8, fill: colour(s.key),
        "data-row": r.name, "data-key": s.key, "data-n": s.n });
      rect.append(svg("title", {}, `${r.name} ${s.key}: ${s.n}`));
      root.append(rect);
      x += w;
    }
    const total = r.segments.reduce((n, s) => n + s.n, 0);
    root.append(svg("text", { x: x + 6, y: y + 16, class: "value" }, r.value !== undefined ? r.value : total));
  });
  node.replaceChildren(root);
}

// groupRows turns counts into rows of segments, rows and segments in the
// order first seen (the API sorts them).
function groupRows(counts, rowOf, keyOf) {
  const rows = new Map();
  for (const c of counts) {
    const name = rowOf(c);
    if (!rows.has(name)) rows.set(name, { name, segments: [] });
    rows.get(name).segments.push({ key: keyOf(c), n: c.count });
  }
  return [...rows.values()];
}

function legend(node, keys) {
  node.replaceChildren(...[...new Set(keys)].map((k) => {
    const item = el("span", { class: "legend-item" });
    const sw = svg("svg", { width: 12, height: 12, class: "swatch" });
    sw.append(svg("rect", { width: 12, height: 12, rx: 2, fill: colour(k) }));
    item.append(sw, document.createTextNode(k));
    return item;
  }));
}

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const c of cells) tr.append(el("td", c.num ? { class: "num" } : {}, c.text !== undefined ? c.text : c));
    return tr;
  }));
}

function rvRows(sum) {
  const now = Date.parse(sum.generated);
  return sum.reference_values.map((rv) => {
    const days = Math.max((Date.parse(rv.expiration) - now) / 86400000, 0);
    return { name: rv.name, segments: [{ key: rv.expired ? "contraindicated" : "affirming", n: days }],
      value: rv.expired ? "expired" : `${days < 10 ? days.toFixed(1) : Math.round(days)} d` };
  });
}

function render(sum) {
  const att = sum.attestations || [], req = sum.resource_requests || [];
  const count = (xs, pred) => xs.filter(pred).reduce((n, x) => n + x.count, 0);
  $("tile-attestations").textContent = count(att, () => true);
  $("tile-attest-success").textContent = count(att, (a) => a.status !== "failure");
  $("tile-attest-failure").textContent = count(att, (a) => a.status === "failure");
  $("tile-released").textContent = count(req, (r) => r.reason === "released");
  $("tile-refused").textContent = count(req, (r) => r.reason !== "released");
  $("tile-rvs").textContent = sum.reference_values.length;
  $("tile-policies").textContent = sum.policies.length;
  $("tile-replicas").textContent = sum.replicas.length;

  const attSeries = (sum.attestations_per_minute || []).map((s) => ({ key: s.status, name: `${s.tee} ${s.status}`, points: s.points }));
  timeBars($("chart-attestations-time"), sum.window, attSeries, "Attestations per minute");
  legend($("legend-attestations"), attSeries.map((s) => s.key));
  rowBars($("chart-attestations-tee"), groupRows(att, (a) => a.tee, (a) => a.status), "Attestations by TEE", "No attestation yet.");
  fillTable("table-attestations", att.map((a) => [a.tee, a.status, { text: a.count, num: true }]));

  const reqSeries = (sum.resource_requests_per_minute || []).map((s) => ({ key: s.reason, name: s.reason, points: s.points }));
  timeBars($("chart-requests-time"), sum.window, reqSeries, "Resource requests per minute");
  legend($("legend-requests"), reqSeries.map((s) => s.key));
  rowBars($("chart-requests-resource"), groupRows(req, (r) => r.resource, (r) => r.reason), "Resource requests by resource", "No resource request yet.");
  fillTable("table-requests", req.map((r) => [r.resource, r.reason, { text: r.count, num: true }]));
  $("requests-overflow").hidden = !sum.resources_overflowed;

  rowBars($("chart-rv"), rvRows(sum), "Reference values: validity left",
    sum.remote_attestation_service ? "Kept by the remote attestation service." : "No reference value.");
  fillTable("table-rv", sum.reference_values.map((rv) => [rv.name, fmtDate(rv.expiration), rv.expired ? "expired" : "valid"]));
  fillTable("table-policies", sum.policies.map((p) => [p.kind, p.id, { text: p.bytes, num: true }, p.sha256.slice(0, 16)]));
  const late = (r) => Date.parse(sum.generated) - Date.parse(r.heartbeat) > 45000;
  fillTable("table-replicas", sum.replicas.map((r) => [r.id + (r.self ? " (this)" : ""), fmtDate(r.started),
    fmtDate(r.heartbeat) + (late(r) ? " (late)" : "")]));
  $("status").textContent = `Updated ${new Date(sum.generated).toLocaleTimeString()}`;
}

let timer = null;

function show(state) {
  document.body.dataset.state = state;
  const signedIn = state === "loaded" || state === "error";
  $("login").hidden = signedIn;
  $("main").hidden = !signedIn;
  $("refresh").hidden = !signedIn;
  $("signout").hidden = !signedIn;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  timer = null;
  $("login-error").textContent = message || "";
  $("status").textContent = "";
  show(message ? "refused" : "signed-out");
}

// load fetches the summary; a refusal (401: no token, a bad one, or a role
// the ACL does not allow) signs out with the KBS's reason.
async function load() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return signOut();
  let resp;
  try {
    resp = await fetch("/dashboard/api/summary", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  } catch (e) {
    $("load-error").textContent = "The KBS did not answer: " + e.message;
    return show("error");
  }
  if (resp.status === 401 || resp.status === 403) {
    let detail = `HTTP ${resp.status}`;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not Trustee's body */ }
    return signOut("Refused: " + detail);
  }
  if (!resp.ok) {
    $("load-error").textContent = `The KBS answered HTTP ${resp.status}.`;
    return show("error");
  }
  render(await resp.json());
  $("load-error").textContent = "";
  show("loaded");
  if (!timer) timer = setInterval(load, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    load();
  });
  $("refresh").addEventListener("click", load);
  $("signout").addEventListener("click", () => signOut());
  load();
});
