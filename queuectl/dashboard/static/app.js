/* queuectl dashboard: polls the JSON API every 2 s and draws the page.
 *
 * Job text (ids, commands, errors, logs) is only ever put into the page as
 * text (textContent, text nodes, setAttribute on plain attributes), never
 * parsed as HTML. Every POST carries the page's token in X-Queuectl-Token;
 * the browser adds the Origin the server checks.
 */
"use strict";

const REFRESH_MS = 2000;
const THEME_KEY = "queuectl.theme";
const DLQ_ROWS = 20;
const LOG_TAIL_BYTES = 32 * 1024;
const CHART_MARGIN = { right: 6, top: 8, bottom: 20 }; // the left one fits the widest y label

const view = { state: "", search: "", offset: 0, limit: 25, selected: null };
const rendered = new Map(); // section -> the JSON it shows, to skip redrawing what did not change
let throughputData = [];
let chartPlot = { left: 0, width: 1 }; // where the bars are, for reading the mouse position

// -- theme: applied before the body is drawn, so a dark page never flashes white ----------

function savedTheme() {
  try {
    const theme = localStorage.getItem(THEME_KEY);
    if (theme === "dark" || theme === "light") return theme;
  } catch (error) { /* storage disabled: fall back to the system preference */ }
  return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const toggle = document.getElementById("theme-toggle");
  if (toggle) toggle.textContent = theme === "dark" ? "☀ light" : "☾ dark";
}

function toggleTheme() {
  const theme = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  try { localStorage.setItem(THEME_KEY, theme); } catch (error) { /* not remembered, still applied */ }
  applyTheme(theme);
  drawChart();
}

applyTheme(savedTheme());

// -- small helpers ----------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

/* An element with attributes and children; strings become text nodes, never HTML. */
function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function changed(section, data) {
  const json = JSON.stringify(data);
  if (rendered.get(section) === json) return false;
  rendered.set(section, json);
  return true;
}

function toMillis(value) {
  if (typeof value === "number") return value * 1000;
  if (typeof value === "string") return Date.parse(value);
  return NaN;
}

function ago(millis) {
  if (Number.isNaN(millis)) return "–";
  const seconds = Math.round((Date.now() - millis) / 1000);
  const size = Math.abs(seconds);
  const text = size < 60 ? `${size}s` : size < 3600 ? `${Math.floor(size / 60)}m`
    : size < 86400 ? `${Math.floor(size / 3600)}h` : `${Math.floor(size / 86400)}d`;
  return seconds < 0 ? `in ${text}` : `${text} ago`;
}

/* A cell saying how long ago `value` was; updateTimes() keeps it current on every poll. */
function timeCell(value, suffix = true) {
  const millis = toMillis(value);
  const title = Number.isNaN(millis) ? null : new Date(millis).toLocaleString();
  return h("td", { "data-time": millis, "data-suffix": suffix ? "ago" : "", title });
}

function updateTimes() {
  for (const cell of document.querySelectorAll("[data-time]")) {
    const text = ago(Number(cell.dataset.time));
    cell.textContent = cell.dataset.suffix ? text : text.replace(" ago", "");
  }
}

function badge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

/* Every id links to the job's own page, /jobs/<id>: a plain click opens it in place, any other
 * (a new tab, a copied link) loads the dashboard opened on that job. */
function jobLink(id) {
  return h("a", {
    href: jobPage(id), class: "link mono", title: "Show this job",
    onclick: (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      openDetail(id);
    },
  }, id);
}

const jobPage = (id) => `/jobs/${encodeURIComponent(id)}`;

function allowedRuns(job) {
  return Number.isInteger(job.max_retries) ? 1 + job.max_retries : "?";
}

function runs(job) {
  return `${job.attempts ?? 0}/${allowedRuns(job)}`;
}

function retryable(job) {
  return typeof job.command === "string" && !job.invalid;
}

let toastTimer = null;
function toast(message, isError = false) {
  const box = $("#toast");
  box.textContent = message;
  box.classList.toggle("error", isError);
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

// -- talking to the server ----------------------------------------------------------

async function request(path, options = {}) {
  const response = await fetch(path, { cache: "no-store", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function post(path) {
  const token = document.querySelector('meta[name="queuectl-token"]').content;
  return request(path, { method: "POST", headers: { "X-Queuectl-Token": token } });
}

function jobsUrl() {
  const query = new URLSearchParams({ offset: view.offset, limit: view.limit });
  if (view.state) query.set("state", view.state);
  if (view.search) query.set("q", view.search);
  return `/api/jobs?${query}`;
}

const jobPath = (id) => `/api/jobs/${encodeURIComponent(id)}`;

// -- drawing ------------------------------------------------------------------------

function renderStatus(status) {
  $("#spool").textContent = status.spool;
  for (const [state, count] of Object.entries(status.counts)) {
    const cell = document.querySelector(`[data-count="${state}"]`);
    if (cell) cell.textContent = count.toLocaleString();
  }
  $("#worker-count").textContent = status.workers.length;
  renderPause(Boolean(status.paused));
  renderGroups(status.groups || []);
  renderResources(status.resources || []);
  $("#dlq-count").textContent = status.counts.dead.toLocaleString();
  renderWorkers(status.workers);
  renderSchedules(status.schedules || []);
  throughputData = status.throughput;
  drawChart();
}

function renderWorkers(workers) {
  $("#workers-empty").hidden = workers.length > 0;
  $("#workers").hidden = workers.length === 0;
  if (!changed("workers", workers)) return;
  $("#workers tbody").replaceChildren(...workers.map((worker) => h("tr", {},
    h("td", { class: "mono", title: worker.host }, worker.name),
    h("td", { class: "mono" }, worker.pid),
    timeCell(worker.started, false),
    h("td", {}, worker.job ? jobLink(worker.job) : h("span", { class: "muted" }, "idle")))));
}

function scheduleWhen(schedule) {
  if (schedule.cron) return schedule.tz ? `${schedule.cron} (${schedule.tz})` : schedule.cron;
  return `every ${schedule.every}s`;
}

function renderSchedules(schedules) {
  $("#schedules-empty").hidden = schedules.length > 0;
  $("#schedules").hidden = schedules.length === 0;
  if (!changed("schedules", schedules)) return;
  $("#schedules tbody").replaceChildren(...schedules.map((schedule) => h("tr", {},
    h("td", { class: "mono" }, schedule.name),
    h("td", { class: "mono" }, scheduleWhen(schedule)),
    schedule.paused ? h("td", { class: "muted" }, "paused") : timeCell(schedule.next_run),
    schedule.last_slot ? timeCell(schedule.last_slot) : h("td", { class: "muted" }, "–"),
    h("td", { class: "mono", title: schedule.command ?? "" }, schedule.command ?? ""))));
}

function renderPause(paused) {
  $("#paused-badge").hidden = !paused;
  const button = $("#pause-toggle");
  button.textContent = paused ? "Resume" : "Pause";
  button.dataset.paused = paused ? "1" : "";
}

function renderGroups(groups) {
  $("#groups-empty").hidden = groups.length > 0;
  $("#groups").hidden = groups.length === 0;
  if (!changed("groups", groups)) return;
  $("#groups tbody").replaceChildren(...groups.map((group) => h("tr", {},
    h("td", { class: "mono" }, group.name),
    h("td", { class: "num" }, group.running),
    h("td", { class: "num" }, group.limit ?? "none"),
    h("td", { class: "num" }, group.rate ? `${group.rate} (${group.starts_in_window} now)` : "none"),
    h("td", {}, group.paused ? h("span", { class: "badge state-failed" }, "paused") : h("span", { class: "muted" }, "running")),
    h("td", { class: "actions" }, h("button", {
      type: "button", class: "small", "data-group": group.name,
      onclick: (event) => togglePause(group.name, !group.paused, event.currentTarget),
    }, group.paused ? "Resume" : "Pause")))));
}

/* Each host's resources: declared, held, and which job holds which index (textContent only: job text is escaped). */
function renderResources(hosts) {
  const rows = hosts.flatMap((host) => host.resources.map((entry) => ({ host: host.host, ...entry })));
  $("#resources-empty").hidden = rows.length > 0;
  $("#resources").hidden = rows.length === 0;
  if (!changed("resources", rows)) return;
  $("#resources tbody").replaceChildren(...rows.map((row) => h("tr", {},
    h("td", { class: "mono" }, row.host),
    h("td", { class: "mono" }, row.name),
    h("td", { class: "num" }, `${row.held.length}/${row.declared}`),
    h("td", { class: "mono" }, row.held.map((held) => `${held.index}: ${held.job || held.worker}`).join(", ") || "-"))));
}

/* A pending job that waits for others is shown as "waiting" (its file stays in pending/). */
function shownState(job) {
  return Array.isArray(job.waiting_on) && job.waiting_on.length ? "waiting" : job.state;
}

function waitingText(job) {
  if (!Array.isArray(job.waiting_on) || !job.waiting_on.length) return null;
  return "waits for " + job.waiting_on.map((dep) => `${dep.id} (${dep.state})`).join(", ");
}

function renderJobs(page) {
  const last = Math.min(page.offset + page.jobs.length, page.total);
  $("#page-info").textContent = page.total
    ? `${(page.offset + 1).toLocaleString()}–${last.toLocaleString()} of ${page.total.toLocaleString()}`
    : "";
  $("#newer").disabled = page.offset === 0;
  $("#older").disabled = page.offset + page.limit >= page.total;
  $("#jobs-empty").hidden = page.jobs.length > 0;
  if (!changed("jobs", [page, view.selected])) return;
  $("#jobs tbody").replaceChildren(...page.jobs.map((job) => h("tr", { class: job.id === view.selected ? "selected" : null },
    h("td", {}, jobLink(job.id)),
    h("td", { title: waitingText(job) ?? "" }, badge(shownState(job))),
    h("td", { class: "num" }, runs(job)),
    h("td", { class: "num" }, job.priority ?? 0),
    timeCell(job.updated_at),
    h("td", { class: "command mono", title: job.command ?? job.last_error },
      job.command ?? h("em", { class: "muted" }, "not a valid job"),
      waitingText(job) ? h("span", { class: "muted waiting" }, ` · ${waitingText(job)}`) : null))));
}

function renderDlq(page) {
  $("#dlq-empty").hidden = page.total > 0;
  $("#dlq").hidden = page.total === 0;
  $("#retry-all").disabled = page.total === 0;
  const more = $("#dlq-more");
  more.hidden = page.total <= page.jobs.length;
  more.textContent = `…and ${(page.total - page.jobs.length).toLocaleString()} more: filter the jobs by "dead" to page through them.`;
  if (!changed("dlq", page.jobs)) return;
  $("#dlq tbody").replaceChildren(...page.jobs.map((job) => h("tr", {},
    h("td", {}, jobLink(job.id)),
    h("td", { class: "num" }, runs(job)),
    h("td", { class: "error-text", title: job.last_error }, job.last_error ?? ""),
    timeCell(job.updated_at),
    h("td", { class: "actions" }, retryable(job)
      ? h("button", { type: "button", class: "small", "data-retry": job.id, onclick: (event) => retry(job.id, event.currentTarget) }, "Retry")
      : h("span", { class: "muted", title: "Never a valid job: fix the file and enqueue it again" }, "invalid")))));
}

/* The top of the y axis: four gridline steps of 1, 2 or 5 times a power of ten (whole jobs). */
function axisTop(peak) {
  const wanted = Math.max(1, peak) / 4;
  let power = 1;
  while (true) {
    for (const factor of [1, 2, 5]) if (factor * power >= wanted) return 4 * factor * power;
    power *= 10;
  }
}

function clock(seconds) {
  // 24-hour local time, as `queuectl list` shows it.
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

function drawChart() {
  const canvas = $("#chart");
  if (!canvas) return;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.scale(ratio, ratio);
  const style = getComputedStyle(document.documentElement);
  const color = (name) => style.getPropertyValue(name).trim();
  const buckets = throughputData;
  const peak = axisTop(Math.max(0, ...buckets.map((b) => b.completed + b.failed)));
  context.font = "11px system-ui, sans-serif";
  const { right, top, bottom } = CHART_MARGIN;
  const left = Math.ceil(context.measureText(peak.toLocaleString()).width) + 12;
  const plotWidth = width - left - right, plotHeight = height - top - bottom;
  chartPlot = { left, width: plotWidth };
  const y = (value) => top + plotHeight - (value / peak) * plotHeight;

  context.textBaseline = "middle";
  context.textAlign = "right";
  for (let line = 0; line <= 4; line++) {
    const value = (peak / 4) * line;
    context.fillStyle = color("--grid");
    context.fillRect(left, Math.round(y(value)), plotWidth, 1);
    context.fillStyle = color("--muted");
    context.fillText(value.toLocaleString(), left - 6, y(value));
  }
  if (!buckets.length) return;
  const slot = plotWidth / buckets.length;
  const barWidth = Math.max(1, slot - 2);
  buckets.forEach((bucket, index) => {
    const x = left + index * slot + (slot - barWidth) / 2;
    context.fillStyle = color("--ok");
    context.fillRect(x, y(bucket.completed), barWidth, y(0) - y(bucket.completed));
    context.fillStyle = color("--bad");
    context.fillRect(x, y(bucket.completed + bucket.failed), barWidth, y(0) - y(bucket.failed));
  });
  context.fillStyle = color("--muted");
  context.textBaseline = "alphabetic";
  // Labels every 5, 10, 15, 30 or 60 minutes: the first step whose labels fit side by side at this
  // width (a narrow window gets fewer), and none where it would touch "now" at the right end.
  const gap = 8;
  const labelWidth = Math.ceil(context.measureText(clock(buckets[0].minute)).width);
  const step = [5, 10, 15, 30, 60].find((minutes) => minutes * slot >= labelWidth + gap) ?? buckets.length;
  const nowWidth = Math.ceil(context.measureText("now").width);
  const boxes = [{ text: "now", left: width - right - nowWidth, right: width - right }];
  context.textAlign = "right";
  context.fillText("now", width - right, height - 4);
  context.textAlign = "center";
  for (let index = 0; index < buckets.length; index += step) {
    const center = left + index * slot + slot / 2;
    const box = { text: clock(buckets[index].minute), left: center - labelWidth / 2, right: center + labelWidth / 2 };
    if (box.left < 0 || box.right + gap > boxes[0].left) continue;
    context.fillText(box.text, center, height - 4);
    boxes.push(box);
  }
  canvas.dataset.labels = JSON.stringify(boxes); // where the labels went: the browser tests check they never overlap
  showReadout(null);
}

function showReadout(index) {
  const readout = $("#chart-readout");
  const legend = (completed, failed) => [
    h("span", { class: "swatch ok" }), ` ${completed.toLocaleString()} completed  `,
    h("span", { class: "swatch bad" }), ` ${failed.toLocaleString()} failed`];
  if (index === null) {
    const completed = throughputData.reduce((sum, b) => sum + b.completed, 0);
    const failed = throughputData.reduce((sum, b) => sum + b.failed, 0);
    readout.replaceChildren("Last hour: ", ...legend(completed, failed));
  } else {
    const bucket = throughputData[index];
    readout.replaceChildren(`${clock(bucket.minute)}: `, ...legend(bucket.completed, bucket.failed));
  }
}

function chartHover(event) {
  if (!throughputData.length) return;
  const canvas = event.currentTarget;
  const box = canvas.getBoundingClientRect();
  const index = Math.floor(((event.clientX - box.left - chartPlot.left) / chartPlot.width) * throughputData.length);
  showReadout(index >= 0 && index < throughputData.length ? index : null);
}

// -- the job drawer -------------------------------------------------------------------

const DETAIL_FIELDS = [
  ["runs", (job) => `${job.attempts ?? 0} of ${allowedRuns(job)} allowed`], ["priority"], ["created_at"], ["updated_at"], ["run_at"],
  ["next_run_at"], ["started_at"], ["finished_at"], ["last_duration", (job) => job.last_duration == null ? null : `${job.last_duration} s`],
  ["last_exit_code"], ["last_error"], ["worker"], ["timeout"], ["cwd"],
  ["group"], ["unique_key"], ["after", (job) => Array.isArray(job.after) && job.after.length ? job.after.join(", ") : null],
  ["waiting_on", (job) => waitingText(job)],
];

function openDetail(id, push = true) {
  if (push && location.pathname !== jobPage(id)) history.pushState({ job: id }, "", jobPage(id));
  view.selected = id;
  $("#detail").hidden = false;
  rendered.delete("detail");
  rendered.delete("jobs");
  refresh();
}

function closeDetail(push = true) {
  if (push && location.pathname !== "/") history.pushState({}, "", "/");
  view.selected = null;
  $("#detail").hidden = true;
  rendered.delete("jobs");
  refresh();
}

async function renderDetail(id) {
  let job, log;
  try {
    [job, log] = await Promise.all([request(jobPath(id)), request(`${jobPath(id)}/log?tail=${LOG_TAIL_BYTES}`)]);
  } catch (error) {
    if (view.selected !== id) return;
    $("#detail-title").textContent = id;
    $("#detail-error").textContent = error.message;
    $("#detail-error").hidden = false;
    return;
  }
  if (view.selected !== id) return;
  $("#detail-error").hidden = true;
  if (!changed("detail", [job, log])) return;
  $("#detail-title").textContent = job.id;
  const state = $("#detail-state");
  state.textContent = job.state;
  state.className = `badge state-${job.state}`;
  const retryButton = $("#detail-retry");
  retryButton.hidden = !(job.state === "dead" && retryable(job));
  retryButton.disabled = false;
  const cancelButton = $("#detail-cancel");
  cancelButton.hidden = !["pending", "failed", "processing"].includes(job.state);
  cancelButton.disabled = false;
  $("#detail-command").textContent = job.command ?? "(not a valid job)";
  $("#detail-fields").replaceChildren(...DETAIL_FIELDS.flatMap(([field, show]) => {
    const value = show ? show(job) : job[field];
    if (value === null || value === undefined || value === "") return [];
    return [h("dt", {}, field.replaceAll("_", " ")), h("dd", { class: "mono" }, typeof value === "object" ? JSON.stringify(value) : value)];
  }));
  const pane = $("#detail-log");
  const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
  pane.textContent = log.text || "(no output yet)";
  if (atBottom) pane.scrollTop = pane.scrollHeight;
  $("#log-info").textContent = log.truncated
    ? `last ${Math.round(LOG_TAIL_BYTES / 1024)} KiB of ${(log.size / 1024).toFixed(0)} KiB` : "";
  const history = Array.isArray(job.history) ? job.history : [];
  $("#history").hidden = history.length === 0;
  $("#history-empty").hidden = history.length > 0;
  $("#history tbody").replaceChildren(...history.slice().reverse().map((entry) => h("tr", {},
    h("td", { class: "num" }, entry.attempt ?? ""),
    h("td", { class: "mono", title: entry.worker ?? "" }, entry.started_at ?? ""),
    h("td", { class: "num" }, entry.exit_code ?? (entry.signal ? `sig ${entry.signal}` : "")),
    h("td", { class: "error-text" }, entry.error ?? ""))));
}

// -- actions ------------------------------------------------------------------------

async function cancelJob(id, button) {
  if (button) button.disabled = true;
  try {
    await post(`${jobPath(id)}/cancel`);
    toast(`Job ${id} is cancelled.`);
  } catch (error) {
    toast(`Could not cancel ${id}: ${error.message}`, true);
  }
  rendered.delete("detail");
  refresh();
}

async function retry(id, button) {
  if (button) button.disabled = true;
  try {
    await post(`${jobPath(id)}/retry`);
    toast(`Job ${id} is pending again.`);
  } catch (error) {
    toast(`Could not retry ${id}: ${error.message}`, true);
    if (button) button.disabled = false;
  }
  rendered.delete("dlq");
  refresh();
}

/* Pause or resume the spool (group null) or one group: a POST with the page's token, as a retry. */
async function togglePause(group, pause, button) {
  if (button) button.disabled = true;
  const query = group ? `?group=${encodeURIComponent(group)}` : "";
  const what = group ? `Group ${group}` : "The spool";
  try {
    await post(`/api/${pause ? "pause" : "resume"}${query}`);
    toast(pause ? `${what} is paused: workers start nothing new.` : `${what} is running again.`);
  } catch (error) {
    toast(`Could not ${pause ? "pause" : "resume"}: ${error.message}`, true);
  }
  if (button) button.disabled = false;
  rendered.delete("groups");
  refresh();
}

async function retryAll() {
  if (!window.confirm("Move every job of the dead-letter queue back to pending?")) return;
  const button = $("#retry-all");
  button.disabled = true;
  let retried = 0, skipped = 0, next = "";
  const errors = [];
  try {
    // The server retries one time-boxed batch per call and says where to go on.
    do {
      const batch = await post(`/api/dlq/retry-all?after=${encodeURIComponent(next)}`);
      retried += batch.retried;
      skipped += batch.skipped;
      errors.push(...batch.errors);
      next = batch.next;
      button.textContent = `Retrying… ${retried}`;
    } while (next);
    toast(skipped ? `Retried ${retried}; skipped ${skipped}: ${errors[0]}` : `Retried ${retried} jobs.`, skipped > 0);
  } catch (error) {
    toast(`Retry all stopped after ${retried}: ${error.message}`, true);
  } finally {
    button.textContent = "Retry all";
    button.disabled = false;
    rendered.delete("dlq");
    refresh();
  }
}

function setFilter(state) {
  view.state = state;
  view.offset = 0;
  for (const button of document.querySelectorAll("#state-filter button")) {
    button.setAttribute("aria-pressed", String(button.dataset.state === state));
  }
  refresh();
}

// -- the refresh loop: one poll at a time; an action asks for one more right away ---------

let timer = null;
let running = false;
let again = false;

async function refreshOnce() {
  try {
    renderStatus(await request("/api/status"));
    renderJobs(await request(jobsUrl()));
    renderDlq(await request(`/api/jobs?state=dead&limit=${DLQ_ROWS}`));
    if (view.selected) await renderDetail(view.selected);
    updateTimes();
    const connection = $("#connection");
    connection.textContent = `live · ${new Date().toLocaleTimeString()}`;
    connection.className = "connection live";
  } catch (error) {
    const connection = $("#connection");
    connection.textContent = `offline: ${error.message}`;
    connection.className = "connection offline";
  }
}

async function refresh() {
  if (running) { again = true; return; }
  running = true;
  clearTimeout(timer);
  try {
    do {
      again = false;
      if (!document.hidden) await refreshOnce();
    } while (again);
  } finally {
    running = false;
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

/* The job a /jobs/<id> address names, or null on the dashboard's own address. */
function jobFromPath() {
  const match = location.pathname.match(/^\/jobs\/([^/]+)$/);
  if (!match) return null;
  try { return decodeURIComponent(match[1]); } catch { return null; }
}

function start() {
  applyTheme(document.documentElement.dataset.theme);
  $("#theme-toggle").addEventListener("click", toggleTheme);
  for (const card of document.querySelectorAll(".card[data-state]")) {
    card.addEventListener("click", () => setFilter(card.dataset.state));
  }
  for (const button of document.querySelectorAll("#state-filter button")) {
    button.addEventListener("click", () => setFilter(button.dataset.state));
  }
  let searchTimer = null;
  $("#search").addEventListener("input", (event) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      view.search = event.target.value.trim();
      view.offset = 0;
      refresh();
    }, 200);
  });
  $("#newer").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); refresh(); });
  $("#older").addEventListener("click", () => { view.offset += view.limit; refresh(); });
  $("#retry-all").addEventListener("click", retryAll);
  $("#pause-toggle").addEventListener("click", (event) => togglePause(null, !event.currentTarget.dataset.paused, event.currentTarget));
  $("#detail-close").addEventListener("click", () => closeDetail());
  $("#detail-cancel").addEventListener("click", (event) => cancelJob(view.selected, event.currentTarget));
  window.addEventListener("popstate", () => {
    const opened = jobFromPath();
    if (opened) openDetail(opened, false); else if (view.selected) closeDetail(false);
  });
  const opened = jobFromPath();
  if (opened) openDetail(opened, false);
  $("#detail-retry").addEventListener("click", (event) => retry(view.selected, event.currentTarget));
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && view.selected) closeDetail(); });
  const chart = $("#chart");
  chart.addEventListener("mousemove", chartHover);
  chart.addEventListener("mouseleave", () => showReadout(null));
  window.addEventListener("resize", drawChart);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
