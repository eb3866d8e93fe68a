"use strict";
// zraft dashboard: state arrives over server-sent events (/events) five times a second; actions are POSTs to
// /action carrying the token from this page's URL (the launcher prints it) in the X-Zraft-Token header.
const token = new URLSearchParams(location.search).get("token") || "";
const $ = (sel) => document.querySelector(sel);
const svgNS = "http://www.w3.org/2000/svg";
let last = null;

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(svgNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function act(body) {
  const r = await fetch("/action", {method: "POST", headers: {"Content-Type": "application/json",
    "X-Zraft-Token": token}, body: JSON.stringify(body)});
  return r.json();
}

function state(n) { return n.process !== "up" ? n.process : (n.role || "no answer"); }

function drawRing(nodes) {
  const svg = $("#ring");
  svg.replaceChildren();
  const cx = 210, cy = 210, r = 150, pos = {};
  nodes.forEach((n, i) => {
    const a = -Math.PI / 2 + 2 * Math.PI * i / nodes.length;
    pos[n.id] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  const isolated = new Set(nodes.filter((n) => n.isolated).map((n) => n.id));
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) {
      const a = nodes[i], b = nodes[j];
      const rate = ((a.rates || {})[b.id] || 0) + ((b.rates || {})[a.id] || 0);
      const cut = isolated.has(a.id) || isolated.has(b.id);
      const cls = "link" + (cut ? " cut" : rate > 0 ? " hot" : "");
      const line = el("svg:line", {x1: pos[a.id][0], y1: pos[a.id][1], x2: pos[b.id][0], y2: pos[b.id][1],
        class: cls, "stroke-width": cut ? 2 : Math.min(10, 1.5 + Math.log10(1 + rate) * 2.5)});
      line.appendChild(el("svg:title", {}, `${a.id} <-> ${b.id}: ${rate.toFixed(0)} messages/s`));
      svg.appendChild(line);
    }
  }
  for (const n of nodes) {
    const [x, y] = pos[n.id];
    const st = state(n);
    svg.appendChild(el("svg:circle", {cx: x, cy: y, r: 38, class: `node ${st}`, "data-node": n.id}));
    svg.appendChild(el("svg:text", {x, y: y - 4, class: "big"}, String(n.id)));
    svg.appendChild(el("svg:text", {x, y: y + 14}, n.process === "up" ? `${n.role || "?"} t${n.term ?? "?"}` : st));
  }
}

const rowsById = new Map();  // rows are updated in place, never rebuilt: a button stays under the pointer

function makeRow(id) {
  const tr = el("tr", {"data-node": id});
  for (const cls of ["id", "process", "role", "term", "vote", "leader", "bars", "snap", "actions"]) {
    tr.appendChild(el("td", {class: cls}));
  }
  tr.querySelector(".id").textContent = String(id);
  const bars = tr.querySelector(".bars");
  bars.append(bar("last"), bar("commit"), bar("applied"), el("div", {class: "nums"}));
  for (const a of ["kill", "pause", "resume", "restart", "isolate"]) {
    tr.querySelector(".actions").appendChild(el("button", {"data-action": a, "data-node": id}, a));
  }
  return tr;
}

function bar(cls) {
  const d = el("div", {class: `bar ${cls}`});
  d.appendChild(el("span"));
  return d;
}

function setBar(tr, cls, v, max) {
  tr.querySelector(`.bar.${cls} span`).style.width = `${max ? Math.round(100 * (v || 0) / max) : 0}%`;
}

function drawTable(nodes) {
  const body = $("#nodes tbody");
  const max = Math.max(1, ...nodes.map((n) => n.last_index || 0));
  const seen = new Set();
  nodes.forEach((n, i) => {
    seen.add(n.id);
    let tr = rowsById.get(n.id);
    if (!tr) { tr = makeRow(n.id); rowsById.set(n.id, tr); }
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    const st = state(n);
    const up = n.process === "up";
    tr.className = `${st}${n.role === "leader" && up ? " leader" : ""}`;
    tr.dataset.role = up ? (n.role || "") : n.process;
    const set = (cls, text) => { const c = tr.querySelector(`.${cls}`); if (c.textContent !== text) c.textContent = text; };
    set("process", n.process + (n.isolated ? ", isolated" : ""));
    set("role", n.role || "-");
    set("term", String(n.term ?? "-"));
    set("vote", n.vote ? String(n.vote) : "-");
    set("leader", n.leader ? String(n.leader) : "-");
    set("snap", String(n.snapshot_index ?? "-"));
    setBar(tr, "last", n.last_index, max); setBar(tr, "commit", n.commit, max); setBar(tr, "applied", n.applied, max);
    tr.querySelector(".nums").textContent = `${n.last_index ?? "-"} / ${n.commit ?? "-"} / ${n.applied ?? "-"}`;
    const net = tr.querySelector('button[data-action="isolate"], button[data-action="heal"]');
    const want = n.isolated ? "heal" : "isolate";
    if (net.dataset.action !== want) { net.dataset.action = want; net.textContent = want; }
    for (const b of tr.querySelectorAll("button")) b.disabled = false;
  });
  for (const [id, tr] of rowsById) {
    if (!seen.has(id)) { tr.remove(); rowsById.delete(id); }
  }
}

function drawEvents(events) {
  const ol = $("#events");
  ol.replaceChildren();
  for (const e of events.slice().reverse()) {
    const t = new Date(e.t * 1000).toLocaleTimeString();
    ol.appendChild(el("li", {class: e.kind}, `${t}  ${e.text}`));
  }
}

function render(s) {
  last = s;
  const nodes = s.nodes || [];
  const leaders = nodes.filter((n) => n.role === "leader" && n.process === "up");
  const top = leaders.sort((a, b) => b.term - a.term)[0];
  $("#summary").textContent = `${nodes.length} nodes, ${nodes.filter((n) => n.process === "up").length} up; ` +
    (top ? `leader: node ${top.id} (term ${top.term})` : "no leader");
  $("#summary").dataset.leader = top ? String(top.id) : "";
  drawRing(nodes);
  drawTable(nodes);
  drawEvents(s.events || []);
}

function connect() {
  const es = new EventSource("/events");
  es.onopen = () => { $("#conn").textContent = "live"; $("#conn").classList.add("live"); };
  es.onmessage = (m) => render(JSON.parse(m.data));
  es.onerror = () => {
    $("#conn").textContent = "offline"; $("#conn").classList.remove("live");
    es.close();
    setTimeout(connect, 1000);
  };
}

function report(r) {
  const note = $("#action-error");
  note.textContent = r.ok ? "" : r.error;
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.action) {
    b.disabled = true;
    report(await act({action: b.dataset.action, node: Number(b.dataset.node)}));
  } else if (b.dataset.preset) {
    report(await act({action: b.dataset.preset}));
  }
});

$("#kv").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#kv-answer");
  out.textContent = "...";
  out.classList.remove("error");
  const r = await act({action: "kv", op: $("#kv-op").value, key: $("#kv-key").value, value: $("#kv-value").value});
  if (!r.ok) { out.textContent = r.error; out.classList.add("error"); return; }
  out.textContent = $("#kv-op").value === "get" ? (r.value === null ? "(nil)" : r.value) : "OK";
});

$("#token-note").textContent = token ? "actions enabled (token from the launcher's URL)" :
  "read-only: open the URL the launcher printed (it carries the token) to use the buttons";
// The current state at once (the stream follows), also where a proxy holds back server-sent events.
fetch("/state").then((r) => r.json()).then((s) => { if (!last) render(s); }).catch(() => {});
connect();
