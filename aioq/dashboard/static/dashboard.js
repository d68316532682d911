// aioq dashboard: polls the JSON API (relative URLs, so it works under any mount prefix).
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function ago(iso) {
  if (!iso) return "—";
  return duration((Date.now() - Date.parse(iso)) / 1000) + " ago";
}

function until(iso) {
  if (!iso) return "—";
  const s = (Date.parse(iso) - Date.now()) / 1000;
  return s <= 0 ? "due" : "in " + duration(s);
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
}

function shortId(id) {
  return id && id.length > 14 ? id.slice(0, 12) + "…" : id || "—";
}

// a job id that opens the job's view (the drawer, #job=ID)
function jobLink(id, text) {
  return el("a", { class: "jobref", href: "#job=" + encodeURIComponent(id), title: id },
    text || shortId(id));
}

function fill(tableId, rows, columns, emptyText) {
  const body = $("#" + tableId + " tbody");
  body.replaceChildren();
  if (!rows.length) {
    body.append(el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText)));
    return;
  }
  for (const r of rows) body.append(r);
}

function toast(message, isError) {
  const t = el("div", { class: "toast" + (isError ? " err" : "") }, message);
  $("#toasts").append(t);
  setTimeout(() => t.remove(), 4000);
}

// actions under way, by key: a table redrawn meanwhile keeps their buttons disabled
const pending = new Set();

async function act(url, button, label, key) {
  button.disabled = true;
  if (key) pending.add(key);
  try {
    const r = await fetch(url, { method: "POST" });
    const body = await r.json();
    const outcome = body.outcome || body.error || r.statusText;
    toast(label + ": " + outcome, !r.ok);
  } catch (e) {
    toast(label + ": " + e, true);
  } finally {
    if (key) pending.delete(key);
  }
  refresh();
}

const STATS = ["queued", "running", "scheduled", "failed", "dead"];

function renderQueues(queues) {
  const box = $("#queues");
  box.replaceChildren();
  for (const q of queues) {
    const stats = STATS.map((name) =>
      el("div", { class: "stat " + name + (q[name] ? "" : " zero"), "data-stat": name },
        el("div", { class: "n" }, q[name]), el("div", { class: "l" }, name)));
    box.append(el("div", { class: "card", "data-queue": q.queue },
      el("div", { class: "card-head" },
        el("span", { class: "card-name" }, q.queue),
        q.paused ? el("span", { class: "badge paused" }, "paused")
                 : el("span", { class: "badge active" }, "active")),
      el("div", { class: "stats" }, ...stats)));
  }
}

function renderWorkers(workers) {
  $("#workers-count").textContent = workers.length || "";
  fill("workers", workers.map((w) => el("tr", {},
    el("td", { class: "mono" }, w.consumer),
    el("td", {}, w.host),
    el("td", { class: "num" }, w.pid),
    // a process of `aioq worker --processes N`: its number and its supervisor's pid
    el("td", { class: "num muted" }, w.process ? "#" + w.process + " of " + w.supervisor : "-"),
    el("td", {}, ...w.queues.map((q) => el("span", { class: "badge q" }, q))),
    el("td", { class: "num" }, w.running + " / " + w.concurrency),
    el("td", { class: "num" }, w.done),
    el("td", { class: "num" }, duration(w.uptime)),
    el("td", { class: "num muted" }, w.last_beat.toFixed(1) + "s ago"))),
  9, "No worker alive");
}

// a progress value as a fraction when it says one: a number in [0, 1], or a count and a
// total ({"step": 2, "of": 5}, {"done": 3, "total": 4}); anything else is shown as JSON
function fraction(p) {
  if (typeof p === "number") return p >= 0 && p <= 1 ? p : null;
  if (!p || typeof p !== "object") return null;
  const done = p.step ?? p.done ?? p.current, total = p.of ?? p.total;
  if (typeof done !== "number" || typeof total !== "number" || total <= 0) return null;
  return Math.min(1, Math.max(0, done / total));
}

function progressCell(p) {
  if (p === null || p === undefined) return el("td", { class: "muted" }, "—");
  const json = typeof p === "string" ? p : JSON.stringify(p);
  const f = fraction(p);
  if (f === null) {
    return el("td", { class: "progress mono", title: json },
      json.length > 40 ? json.slice(0, 39) + "…" : json);
  }
  const label = typeof p === "number" ? Math.round(f * 100) + "%"
    : (p.step ?? p.done ?? p.current) + " / " + (p.of ?? p.total);
  return el("td", { class: "progress", title: json },
    el("span", { class: "meter" }, el("span", { style: "width: " + (f * 100).toFixed(1) + "%" })),
    el("span", { class: "mono" }, label));
}

// a scheduled job: when it is due and why it waits (delay, retry backoff, rate limit)
function dueCell(j) {
  if (j.status !== "scheduled") return el("td", { class: "muted" }, "—");
  return el("td", { class: "due", title: j.due_at ? "due " + new Date(j.due_at).toISOString() : "" },
    until(j.due_at), el("span", { class: "muted" }, " · " + (j.wait_reason || "scheduled")));
}

function renderJobs(body) {
  const jobs = body.jobs;
  $("#jobs-count").textContent = jobs.length || "";
  const rows = [];
  jobs.forEach((j, i) => {
    const key = "cancel " + j.queue + " " + j.id;
    const started = j.started_at ? " · started " + ago(j.started_at) : "";
    rows.push(el("tr", { "data-job": j.id, "data-status": j.status },
      el("td", {}, el("span", { class: "badge s-" + j.status }, j.status)),
      el("td", { class: "mono", title: j.id }, jobLink(j.id)),
      el("td", { class: "mono" }, j.task),
      el("td", {}, el("span", { class: "badge q" }, j.queue)),
      el("td", { class: "num" + (j.priority ? "" : " muted") }, j.priority),
      el("td", { class: "num muted", title: "enqueued " + ago(j.enqueued_at) + started },
        j.enqueued_at ? duration((Date.now() - Date.parse(j.enqueued_at)) / 1000) : "—"),
      dueCell(j),
      el("td", { class: "num" + (j.attempts ? "" : " muted") }, j.attempts || "—"),
      progressCell(j.progress),
      el("td", { class: "actions" },
        el("button", { class: "cancel", ...(pending.has(key) ? { disabled: "" } : {}),
          onclick: (e) => act("api/jobs/" + encodeURIComponent(j.id) + "/cancel?queue="
            + encodeURIComponent(j.queue), e.target, "cancel " + shortId(j.id), key) },
          pending.has(key) ? "Cancelling…" : "Cancel"))));
    const last = i === jobs.length - 1 || jobs[i + 1].queue !== j.queue;
    const shown = jobs.filter((o) => o.queue === j.queue).length;
    if (last && shown >= body.limit) {
      rows.push(el("tr", { class: "more" }, el("td", { colspan: 10 },
        `At most ${body.limit} jobs per queue are shown: `,
        el("code", {}, `aioq jobs MODULE:APP --queue ${j.queue}`), " lists more.")));
    }
  });
  fill("jobs", rows, 10, "No queued, scheduled or running jobs");
}

// earlier attempts' failures (job.history): a note beside the job's own outcome, never in
// its place, so a job that succeeded on a retry shows no error
function historyNote(j) {
  const h = j.history || [];
  if (!h.length) return null;
  const lines = h.map((e) => "attempt " + e.attempt + ": " + (e.exc_type || "Error") + ": "
    + (e.error || ""));
  return el("span", { class: "history muted", title: lines.join("\n") },
    " · after " + h.length + " failed attempt" + (h.length === 1 ? "" : "s"));
}

// a succeeded job's return value (JSON), cut to fit; a big one is only sized (not read)
function resultCell(j) {
  if (j.result_size > resultPreviewMax) {
    return el("td", { class: "result muted" }, "result of " + j.result_size + " bytes (aioq job shows it)");
  }
  const json = JSON.stringify(j.result);
  return el("td", { class: "result mono", title: json },
    json.length > 80 ? json.slice(0, 79) + "…" : json);
}

function renderRecent(jobs) {
  $("#recent-count").textContent = jobs.length || "";
  fill("recent", jobs.map((j) => {
    const ms = j.started_at && j.finished_at
      ? Date.parse(j.finished_at) - Date.parse(j.started_at) : null;
    const took = ms === null ? "—" : ms < 1000 ? Math.max(0, ms) + " ms" : duration(ms / 1000);
    const outcome = j.error
      ? el("td", { class: "error", title: (j.exc_type || "") + ": " + j.error },
        el("span", { class: "exc" }, j.exc_type || "Error"), ": " + j.error)
      : j.status === "succeeded" ? resultCell(j) : el("td", { class: "muted" }, j.status);
    const note = historyNote(j);
    if (note) outcome.append(note);
    return el("tr", { "data-job": j.id, "data-status": j.status },
      el("td", {}, el("span", { class: "badge s-" + j.status }, j.status)),
      el("td", { class: "mono", title: j.id }, jobLink(j.id)),
      el("td", { class: "mono" }, j.task),
      el("td", {}, el("span", { class: "badge q" }, j.queue)),
      el("td", { class: "num" + (j.priority ? "" : " muted") }, j.priority),
      el("td", { class: "num muted" }, took),
      el("td", { class: "num muted" }, ago(j.finished_at)),
      outcome);
  }), 8, "No job has finished yet");
}

// task names the app has: a failed job of any other task can only fail again, so it gets no
// Retry button (set from the overview)
let knownTasks = null;
let resultPreviewMax = Infinity;  // bytes: bigger results are listed by size only

function retryCell(j) {
  if (knownTasks && !knownTasks.has(j.task)) {
    return el("td", { class: "actions muted", title: "no task named " + JSON.stringify(j.task)
      + " is registered in this app: a retry would fail again" }, "unknown task");
  }
  return el("td", { class: "actions" },
    el("button", { class: "retry", onclick: (e) =>
      act("api/jobs/" + encodeURIComponent(j.id) + "/retry", e.target, "retry " + shortId(j.id)) },
      "Retry"));
}

function renderFailed(jobs) {
  $("#failed-count").textContent = jobs.length || "";
  fill("failed", jobs.map((j) => el("tr", { "data-job": j.id },
    el("td", { class: "mono", title: j.id }, jobLink(j.id)),
    el("td", { class: "mono" }, j.task),
    el("td", {}, el("span", { class: "badge q" }, j.queue)),
    el("td", { class: "error", title: (j.exc_type || "") + ": " + (j.error || "") },
      el("span", { class: "exc" }, j.exc_type || "Error"), ": " + (j.error || "")),
    el("td", { class: "num" }, j.attempts, historyNote(j)),
    el("td", { class: "num muted" }, ago(j.finished_at)),
    retryCell(j))),
  7, "No failed jobs");
}

function renderDead(entries) {
  $("#dead-count").textContent = entries.length || "";
  fill("dead", entries.map((d) => el("tr", { "data-entry": d.entry, "data-job": d.job_id || "" },
    el("td", { class: "mono" }, d.entry),
    el("td", { class: "mono", title: d.job_id || "" }, d.job_id ? jobLink(d.job_id) : "—"),
    el("td", { class: "mono" }, d.task || "—"),
    el("td", {}, el("span", { class: "badge q" }, d.queue)),
    el("td", { class: "reason" }, d.reason),
    el("td", { class: "num muted" }, ago(d.at)),
    d.task && knownTasks && !knownTasks.has(d.task)
      ? el("td", { class: "actions muted", title: "no task named " + JSON.stringify(d.task)
        + " is registered in this app: a requeue would fail again" }, "unknown task")
      : el("td", { class: "actions" },
        el("button", { class: "primary requeue", onclick: (e) =>
          act("api/dead/" + encodeURIComponent(d.entry) + "/requeue", e.target, "requeue " + d.entry) },
          "Requeue")))),
  7, "The dead-letter queue is empty");
}

function renderCrons(crons) {
  fill("crons", crons.map((c) => el("tr", {},
    el("td", { class: "mono" }, c.schedule),
    el("td", {}, el("span", { class: "badge q" }, c.queue)),
    el("td", { class: "muted", title: c.last_tick ? "last tick handled " + ago(c.last_tick) : "" },
      c.last_run ? ago(c.last_run) : "never ran"),
    el("td", {}, until(c.next_tick)))),
  4, "No cron schedules");
}

function renderLimits(limits) {
  fill("limits", limits.map((r) => el("tr", {},
    el("td", { class: "mono" }, r.task),
    el("td", {}, el("span", { class: "badge q" }, r.queue)),
    el("td", { class: "num mono" }, r.limit))),
  3, "No rate limits");
}

// jobs finished per second over the last 10 minutes, one bar per 10 s: the buckets the
// workers' heartbeats add to in Redis (views.throughput), so a first load shows them all
function renderThroughput(series) {
  const box = $("#throughput");
  if (!series || series.length === 0) return;
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 90, slots = 60, gap = 2, bw = W / slots - gap;
  const max = Math.max(1, ...series.map((p) => p.rate));
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  series.slice(-slots).forEach((p, i, all) => {
    const h = Math.max(1, (p.rate / max) * (H - 14));
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("class", "bar");
    r.setAttribute("x", (slots - all.length + i) * (bw + gap));
    r.setAttribute("y", H - h);
    r.setAttribute("width", bw);
    r.setAttribute("height", h);
    const title = document.createElementNS(NS, "title");
    title.textContent = `${p.jobs} jobs, ${p.rate.toFixed(1)}/s, at ${new Date(p.t * 1000).toLocaleTimeString()}`;
    r.appendChild(title);
    svg.appendChild(r);
  });
  // the label is HTML, not SVG text: the chart stretches to the panel's width
  const label = el("div", { class: "axis" }, `scale: ${max.toFixed(1)} jobs/s · one bar per 10 s · last 10 min`);
  box.replaceChildren(label, svg);
  $("#rate-now").textContent = `${series[series.length - 1].rate.toFixed(1)}/s`;
}

function setLive(ok, text) {
  $("#live").className = "live " + (ok ? "ok" : "err");
  $("#live-text").textContent = text;
}

// -- one job: the drawer opened by #job=ID, redrawn with every poll while open -------------

let detailId = null;  // the id in the URL's #job=ID, or null when the drawer is closed
let detailSeq = 0;    // answers to an earlier id (or poll) are dropped

function badge(status) {
  return el("span", { class: "badge s-" + status }, status);
}

function at(iso) {
  if (!iso) return "—";
  return iso.replace("T", " ").slice(0, 19) + " UTC · " + ago(iso);
}

function cut(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

function took(s) {
  if (!s.started_at || !s.finished_at) return "";
  const ms = Date.parse(s.finished_at) - Date.parse(s.started_at);
  return ms < 1000 ? Math.max(0, ms) + " ms" : duration(ms / 1000);
}

function openFromHash() {
  const m = /^#job=(.+)$/.exec(location.hash);
  detailId = m ? decodeURIComponent(m[1]) : null;
  $("#detail").hidden = $("#detail-backdrop").hidden = !detailId;
  if (!detailId) return;
  $("#detail-title").replaceChildren("Job " + detailId);
  $("#detail-body").replaceChildren(el("p", { class: "muted" }, "loading…"));
  loadDetail();
}

function closeDetail() {
  history.replaceState(null, "", location.pathname + location.search);
  openFromHash();
}

async function loadDetail() {
  const id = detailId, seq = ++detailSeq;
  if (!id) return;
  try {
    const r = await fetch("api/jobs/" + encodeURIComponent(id));
    const body = await r.json();
    if (seq !== detailSeq || id !== detailId) return;
    if (!r.ok) {
      $("#detail-body").replaceChildren(el("p", { class: "error" }, body.error || r.statusText));
      return;
    }
    renderDetail(body);
  } catch (e) {
    if (seq === detailSeq) $("#detail-body").replaceChildren(el("p", { class: "error" }, String(e)));
  }
}

function renderDetail(body) {
  const parts = [];
  const j = body.job;
  if (j) {
    $("#detail-title").replaceChildren("Job " + j.id + " ", badge(j.status));
    const rows = [
      ["task", j.task], ["queue", j.queue],
      ["status", j.status + (j.wait_reason ? " (" + j.wait_reason + ")" : "")],
      ["attempts", j.attempts + " (retries allowed: " + j.retries + ")"],
      ["args", cut(JSON.stringify(j.args), 600)], ["kwargs", cut(JSON.stringify(j.kwargs), 600)],
      ["enqueued", at(j.enqueued_at)], ["started", at(j.started_at)],
      ["finished", at(j.finished_at)], ["worker", j.worker || "—"],
    ];
    if (j.due_at) rows.push(["due", at(j.due_at)]);
    if (j.progress !== null && j.progress !== undefined) rows.push(["progress", cut(JSON.stringify(j.progress), 600)]);
    if (j.status === "succeeded") rows.push(["result", cut(JSON.stringify(j.result), 2000)]);
    if (j.error) rows.push(["error", (j.exc_type || "Error") + ": " + j.error]);
    for (const h of j.history || []) {
      rows.push(["attempt " + h.attempt, "failed " + at(h.at) + ": " + (h.exc_type || "Error") + ": " + (h.error || "")]);
    }
    if (j.workflow) rows.push(["workflow", j.workflow]);
    parts.push(el("div", { class: "panel" }, el("dl", { class: "fields" },
      ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", k === "error" ? { class: "error" } : {}, v)]))));
    if (j.traceback) {
      parts.push(el("h4", {}, "Traceback"),
        el("div", { class: "panel" }, el("pre", { class: "traceback" }, j.traceback)));
    }
  } else {
    const step = body.workflow && body.workflow.steps.find((s) => s.id === body.id);
    $("#detail-title").replaceChildren((step ? "Group " : "Workflow ") + body.id + " ",
      ...(step ? [badge(step.status)] : []));
  }
  if (body.workflow) parts.push(...workflowPart(body.workflow, body.id));
  else if (j && j.workflow) parts.push(el("p", { class: "muted" }, "The workflow's record has expired."));
  $("#detail-body").replaceChildren(...parts);
}

// a workflow as its steps, in the order they were planned (a chain's in order, a group before
// its members): status, id (each opens its own view), task, queue, outcome
function workflowPart(w, current) {
  const counts = Object.entries(w.by_status).sort()
    .map(([status, n]) => el("span", { class: "badge s-" + status }, status + " " + n));
  const groups = w.groups ? " · " + w.groups + " group" + (w.groups === 1 ? "" : "s") : "";
  const rows = w.steps.map((s) => {
    let outcome;
    if (s.kind === "group") {
      const f = s.total ? s.done / s.total : 0;
      outcome = el("td", { class: "progress" },
        el("span", { class: "meter" }, el("span", { style: "width: " + (f * 100).toFixed(1) + "%" })),
        el("span", { class: "mono" }, s.done + " / " + s.total + " done"));
    } else if (s.error) {
      outcome = el("td", { class: "error", title: (s.exc_type || "") + ": " + s.error },
        el("span", { class: "exc" }, s.exc_type || "Error"), ": " + s.error);
    } else if (s.wait_reason === "workflow") {
      outcome = el("td", { class: "muted" }, "waits for the steps before it");
    } else {
      outcome = el("td", { class: "num muted" }, took(s));
    }
    const marks = [s.id === current ? "this" : null, s.result ? "result" : null].filter(Boolean);
    return el("tr", { "data-step": s.id, "data-status": s.status, "data-kind": s.kind,
      class: s.id === current ? "this" : "" },
      el("td", { class: "num muted" }, s.index + 1),
      el("td", {}, badge(s.status)),
      el("td", { class: "mono", title: s.id }, jobLink(s.id)),
      el("td", { class: "mono" }, s.kind === "group" ? "group of " + s.total : s.task),
      el("td", {}, el("span", { class: "badge q" }, s.queue)),
      outcome,
      el("td", { class: "mark" }, marks.join(" · ")));
  });
  if (!w.listed_all) {
    rows.push(el("tr", { class: "more" }, el("td", { colspan: 7 },
      `${w.steps.length} of ${w.total} steps listed: the first ${w.limit}, then the failed ones `
      + "and the workflow's result (all are counted above). ",
      el("code", {}, "aioq job MODULE:APP ID --steps N"), " lists more.")));
  }
  return [
    el("h4", {}, "Workflow ", el("span", { class: "id" }, w.id),
      " · " + w.total + " step" + (w.total === 1 ? "" : "s") + groups),
    el("div", { class: "flow-counts" }, ...counts),
    el("div", { class: "panel" }, el("table", { id: "steps" },
      el("thead", {}, el("tr", {}, ...["#", "Status", "Step", "Task", "Queue", "Outcome", ""]
        .map((h, i) => el("th", i === 0 ? { class: "num" } : {}, h)))),
      el("tbody", {}, ...rows))),
  ];
}

window.addEventListener("hashchange", openFromHash);
document.addEventListener("keydown", (e) => { if (e.key === "Escape" && detailId) closeDetail(); });
$("#detail-close").addEventListener("click", closeDetail);
$("#detail-backdrop").addEventListener("click", closeDetail);

let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    // the jobs listing reads the queues' indexes and a few records (no scan): every time too
    const [ov, dead, jobs] = await Promise.all([fetch("api/overview"), fetch("api/dead"),
      fetch("api/jobs")]);
    const overview = await ov.json();
    const deadBody = await dead.json();
    const jobsBody = await jobs.json();
    if (!ov.ok) throw new Error(overview.error || ov.statusText);
    if (!dead.ok) throw new Error(deadBody.error || dead.statusText);
    if (!jobs.ok) throw new Error(jobsBody.error || jobs.statusText);
    $("#app-name").textContent = overview.app;
    document.title = "aioq · " + overview.app;
    knownTasks = new Set(overview.tasks || []);
    resultPreviewMax = overview.result_preview_max ?? Infinity;
    renderQueues(overview.queues);
    renderThroughput(overview.throughput);
    renderWorkers(overview.workers);
    renderJobs(jobsBody);
    renderRecent(overview.recent);
    renderFailed(overview.failed);
    renderDead(deadBody.dead);
    renderCrons(overview.crons);
    renderLimits(overview.rate_limits);
    setLive(true, "live · " + new Date().toLocaleTimeString());
    if (detailId) loadDetail();
  } catch (e) {
    setLive(false, String(e.message || e));
  } finally {
    busy = false;
  }
}

openFromHash();
refresh();
setInterval(refresh, 1000);
