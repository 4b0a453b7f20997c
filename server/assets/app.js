// Rivulet's dashboard: polls /api/jobs every second, keeps ten minutes of samples, and draws
// the jobs table, the selected job's graph, rates, sources and recent epochs. No dependencies.
"use strict";

const POLL_MS = 1000;
const KEEP_MS = 10 * 60 * 1000;
let selected = null;
// Per job key: [{t, in, out}] samples of cumulative counters; per operator key likewise.
const history = new Map();
const opHistory = new Map();

const fmt = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });
const jobKey = (j) => `${j.database}.${j.name}`;

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    tr.appendChild(c instanceof Node ? c : text("td", c));
  }
  return tr;
}

function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${fmt.format(n)} ${units[i]}`;
}

function duration(ms) {
  if (ms == null) return "";
  return ms < 1000 ? `${fmt.format(ms)} ms` : `${fmt.format(ms / 1000)} s`;
}

function when(ms) {
  return ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

// The rate of a cumulative counter over the last few samples.
function rate(samples, field) {
  if (!samples || samples.length < 2) return 0;
  const last = samples[samples.length - 1];
  const first = samples[Math.max(0, samples.length - 4)];
  const dt = (last.t - first.t) / 1000;
  return dt > 0 ? Math.max(0, (last[field] - first[field]) / dt) : 0;
}

function remember(map, key, t, sample) {
  let s = map.get(key);
  if (!s) { s = []; map.set(key, s); }
  const last = s[s.length - 1];
  // A restarted job counts from zero again: start its history over.
  if (last && (sample.in < last.in || sample.out < last.out)) s.length = 0;
  s.push({ t, ...sample });
  while (s.length && s[0].t < t - KEEP_MS) s.shift();
  return s;
}

function drawJobs(data) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const j of data.jobs) {
    const key = jobKey(j);
    const s = history.get(key);
    const tr = row([
      text("td", j.name),
      text("td", j.kind, "text"),
      text("td", j.status, `text status-${j.status}`),
      j.parallelism ?? "",
      j.epoch ?? "",
      fmt.format(rate(s, "in")),
      fmt.format(rate(s, "out")),
      j.late_rows ?? "",
      j.dead_letters ?? "",
      j.restarts,
    ]);
    tr.dataset.job = key;
    if (key === selected) tr.classList.add("selected");
    tr.addEventListener("click", () => { selected = key; render(lastData); });
    body.appendChild(tr);
  }
}

// Stages as columns by depth (sources first), each a box listing its operators.
function drawGraph(job, t) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const el = (name, attrs, content) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (content != null) e.textContent = content;
    svg.appendChild(e);
    return e;
  };
  const defs = el("defs", {});
  const marker = document.createElementNS(ns, "marker");
  for (const [k, v] of Object.entries({ id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 6, markerHeight: 6, orient: "auto" })) marker.setAttribute(k, v);
  const tip = document.createElementNS(ns, "path");
  tip.setAttribute("d", "M0,0 L10,5 L0,10 z");
  tip.setAttribute("style", "fill:#7a8090;stroke:none");
  marker.appendChild(tip);
  defs.appendChild(marker);
  const stages = job.stages || [];
  const depth = [];
  const readers = stages.map(() => []);
  stages.forEach((s, i) => {
    const from = (s.input.edges || []).flatMap((e) => e.from);
    depth[i] = from.length ? Math.max(...from.map((f) => depth[f] + 1)) : 0;
    for (const e of s.input.edges || []) for (const f of e.from) readers[f].push({ to: i, hash: e.hash });
  });
  const columns = [];
  stages.forEach((s, i) => { (columns[depth[i]] ||= []).push(i); });
  const W = 230, GAP = 70, LINE = 17;
  const boxes = [];
  let height = 0;
  columns.forEach((col, d) => {
    let y = 10;
    for (const i of col) {
      const s = stages[i];
      const lines = 2 + s.operators.length;
      const h = lines * LINE + 10;
      boxes[i] = { x: 10 + d * (W + GAP), y, h };
      y += h + 20;
    }
    height = Math.max(height, y);
  });
  svg.setAttribute("width", 20 + columns.length * (W + GAP));
  svg.setAttribute("height", Math.max(height, 60));
  stages.forEach((s, i) => {
    for (const r of readers[i]) {
      const a = boxes[i], b = boxes[r.to];
      const x1 = a.x + W, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
      el("path", { d: `M${x1},${y1} C${x1 + GAP / 2},${y1} ${x2 - GAP / 2},${y2} ${x2},${y2}`,
        class: r.hash ? "hash" : "forward" });
    }
  });
  stages.forEach((s, i) => {
    const b = boxes[i];
    el("rect", { x: b.x, y: b.y, width: W, height: b.h, class: s.input.table ? "source" : "stage",
      "data-stage": i });
    const title = s.input.table ? `stage ${i}: source ${s.input.table}` : `stage ${i}`;
    el("text", { x: b.x + 8, y: b.y + LINE }, `${title} ×${s.parallelism}`);
    s.operators.forEach((name, o) => {
      const key = `${jobKey(job)}/${i}/${o}`;
      const r = rate(opHistory.get(key), "out");
      el("text", { x: b.x + 14, y: b.y + LINE * (o + 2), "data-operator": name }, name);
      el("text", { x: b.x + W - 8, y: b.y + LINE * (o + 2), "text-anchor": "end", class: "rate" },
        `${fmt.format(r)}/s`);
    });
    if (s.operators.length === 0) {
      el("text", { x: b.x + 14, y: b.y + LINE * 2, class: "rate" }, "(reads and forwards)");
    }
  });
}

function drawChart(job) {
  const canvas = document.getElementById("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 36;
  ctx.clearRect(0, 0, w, h);
  const s = history.get(jobKey(job)) || [];
  const points = [];
  for (let i = 1; i < s.length; i++) {
    const dt = (s[i].t - s[i - 1].t) / 1000;
    if (dt > 0) points.push({ t: s[i].t, in: (s[i].in - s[i - 1].in) / dt,
      out: (s[i].out - s[i - 1].out) / dt });
  }
  const max = Math.max(1, ...points.map((p) => Math.max(p.in, p.out)));
  const t1 = Date.now(), t0 = t1 - 5 * 60 * 1000;
  const x = (t) => pad + ((t - t0) / (t1 - t0)) * (w - pad - 8);
  const y = (v) => h - 20 - (v / max) * (h - 30);
  ctx.strokeStyle = "#d0d3da";
  ctx.fillStyle = "#5b6070";
  ctx.font = "11px system-ui";
  ctx.beginPath(); ctx.moveTo(pad, 8); ctx.lineTo(pad, h - 20); ctx.lineTo(w - 8, h - 20); ctx.stroke();
  ctx.fillText(fmt.format(max), 2, 16);
  ctx.fillText("0", 2, h - 20);
  ctx.fillText("−5 min", pad, h - 5);
  ctx.fillText("now", w - 30, h - 5);
  for (const [field, color] of [["in", "#2f6fd6"], ["out", "#2f9a5a"]]) {
    ctx.strokeStyle = color;
    ctx.beginPath();
    points.filter((p) => p.t >= t0).forEach((p, i) => {
      if (i === 0) ctx.moveTo(x(p.t), y(p[field])); else ctx.lineTo(x(p.t), y(p[field]));
    });
    ctx.stroke();
    ctx.fillStyle = color;
    ctx.fillText(`records ${field}/s`, field === "in" ? pad + 10 : pad + 110, 16);
  }
}

function drawDetail(job) {
  const section = document.getElementById("detail");
  section.hidden = false;
  document.getElementById("detail-title").textContent =
    `${job.name} (${job.kind}, ${job.database}) — ${job.status}`;
  const err = document.getElementById("detail-error");
  err.hidden = !job.error;
  err.textContent = job.error || "";
  drawGraph(job);
  drawChart(job);
  const ops = document.querySelector("#operators tbody");
  ops.replaceChildren();
  for (const s of job.stages || []) {
    s.operators.forEach((name, o) => {
      const key = `${jobKey(job)}/${s.stage}/${o}`;
      const h = opHistory.get(key);
      const inst = s.instances.map((i) => i.operators[o]);
      const wm = inst.map((x) => x.input_watermark_ms).filter((x) => x != null);
      const minWm = wm.length === inst.length && wm.length ? Math.min(...wm) : null;
      const life = Math.max(1, job.uptime_ms) * s.instances.length;
      const busy = s.instances.reduce((a, i) => a + i.busy_ms, 0) / life * 100;
      const back = s.instances.reduce((a, i) => a + i.backpressured_ms, 0) / life * 100;
      ops.appendChild(row([
        text("td", String(s.stage)),
        text("td", name, "text"),
        s.parallelism,
        fmt.format(rate(h, "in")),
        fmt.format(rate(h, "out")),
        when(minWm),
        minWm == null ? "" : duration(Date.now() - minWm),
        bytes(inst.reduce((a, x) => a + x.state_bytes, 0)),
        `${fmt.format(busy)} %`,
        `${fmt.format(back)} %`,
      ]));
    });
  }
  const sources = document.querySelector("#sources tbody");
  sources.replaceChildren();
  for (const s of job.sources || []) {
    const lag = (s.splits || []).reduce((a, p) => a + (p.end == null ? 0 : p.end - p.position), 0);
    sources.appendChild(row([
      text("td", String(s.source)), text("td", s.table, "text"), s.records_in, s.position,
      when(s.watermark_ms), s.watermark_lag_s == null ? "" : duration(s.watermark_lag_s * 1000),
      duration(s.idle_ms),
      (s.splits || []).length ? `${s.splits.length} (lag ${lag})` : "",
    ]));
  }
  const epochs = document.querySelector("#epochs tbody");
  epochs.replaceChildren();
  for (const e of job.epochs || []) {
    epochs.appendChild(row([String(e.epoch), e.checkpoint ? "synced" : "", duration(e.duration_ms),
      duration(e.alignment_ms), bytes(e.bytes), e.rows].map((c, i) => i === 0 ? text("td", c) : c)));
  }
}

let lastData = { jobs: [] };

function render(data) {
  drawJobs(data);
  const job = data.jobs.find((j) => jobKey(j) === selected);
  if (job) drawDetail(job); else document.getElementById("detail").hidden = true;
}

async function poll() {
  try {
    const response = await fetch("/api/jobs", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    const t = Date.now();
    for (const j of data.jobs) {
      remember(history, jobKey(j), t, { in: j.records_in || 0, out: j.records_out || 0 });
      for (const s of j.stages || []) {
        s.operators.forEach((_, o) => {
          const sum = (f) => s.instances.reduce((a, i) => a + i.operators[o][f], 0);
          remember(opHistory, `${jobKey(j)}/${s.stage}/${o}`, t,
            { in: sum("records_in"), out: sum("records_out") });
        });
      }
    }
    if (selected == null && data.jobs.length) selected = jobKey(data.jobs[0]);
    lastData = data;
    render(data);
    document.getElementById("status").textContent = `${data.jobs.length} jobs · updated ${new Date(t).toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById("status").textContent = `cannot reach the server: ${e.message}`;
  }
  setTimeout(poll, POLL_MS);
}

poll();
