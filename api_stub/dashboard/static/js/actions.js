// Warm-up and invalidation (operator role), and the progress of what they started.
//
// POST /warmup answers 202 with a task id at once; its progress is polled from
// GET /warmup/{task_id} until the task is ready (SUCCESS or FAILURE).
//
// Automatic warm-ups (a worker start on a cold cache, a clear, a Redis restart, cachectl up,
// a deploy) are typed by nobody: GET /warmup/current names the one running, which joins the
// same list, followed the same way.

import { API, ApiError, call } from "./api.js";
import { el } from "./charts.js";
import { count, duration, percent } from "./series.js";

const $ = (selector) => document.querySelector(selector);
const PROGRESS_MS = 1000;
const KEPT_TASKS = 6;

// Viewers see the buttons greyed out, with the reason; the API refuses them anyway (403).
export function allowActions(role) {
  const allowed = role === "operator" || role === "admin";
  for (const button of document.querySelectorAll("[data-needs=operator]")) {
    button.disabled = !allowed;
    button.title = allowed ? "" : "needs the operator role";
  }
  $("#actions-note").textContent = allowed ? "" : "operator role needed";
}

function taskItem(kind, title) {
  const item = el("li", "task");
  item.dataset.kind = kind;
  item.dataset.state = "SENDING";
  const head = el("div", "task-head");
  head.append(el("span", "task-title", title), el("span", "task-state", "sending…"));
  const bar = el("div", "progress indeterminate");
  bar.append(el("span"));
  item.append(head, bar, el("div", "task-detail"));
  const list = $("#tasks");
  list.prepend(item);
  while (list.children.length > KEPT_TASKS) list.lastElementChild.remove();
  return item;
}

function show(item, { state, fraction = null, detail = "" }) {
  item.dataset.state = state;
  item.querySelector(".task-state").textContent = state.toLowerCase();
  const bar = item.querySelector(".progress");
  const done = state === "SUCCESS";
  const known = fraction !== null || done;
  bar.classList.toggle("indeterminate", !known && !["FAILURE", "ERROR"].includes(state));
  bar.classList.toggle("failed", state === "FAILURE" || state === "ERROR");
  bar.firstElementChild.style.width = known ? `${100 * (done ? 1 : fraction)}%` : "";
  item.dataset.fraction = done ? "1" : fraction === null ? "" : String(fraction);
  item.querySelector(".task-detail").textContent = detail;
}

function failed(item, error) {
  const reason = error instanceof ApiError ? error.message : String(error);
  show(item, { state: "ERROR", detail: reason });
}

// The figures of a finished warm-up, e.g. "written 30 · present 0 · 0.2 s".
function summary(result) {
  if (!result) return "";
  return Object.entries(result)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) =>
      name.endsWith("seconds") ? duration(value) : `${name} ${count(value)}`,
    )
    .join(" · ");
}

async function follow(item, taskId) {
  item.dataset.taskId = taskId;
  for (;;) {
    let progress;
    try {
      progress = await call(`${API}/warmup/${encodeURIComponent(taskId)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 429) {
        await sleep((error.retryAfter ?? 5) * 1000);
        continue;
      }
      failed(item, error);
      return;
    }
    const { state, fraction, done, total } = progress;
    let detail = total ? `${count(done)} of ${count(total)} (${percent(fraction, 0)})` : "";
    if (state === "SUCCESS") detail = summary(progress.result);
    if (state === "FAILURE") detail = progress.error ?? "failed";
    show(item, { state, fraction, detail });
    if (progress.ready) return;
    await sleep(PROGRESS_MS);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function memberIds(text) {
  const ids = text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map(Number);
  if (!ids.length || ids.some((id) => !Number.isInteger(id) || id < 1)) {
    throw new Error("member ids are positive whole numbers, separated by commas");
  }
  return ids;
}

async function startWarmup(event) {
  event.preventDefault();
  const kind = $("#warmup-kind").value;
  const item = taskItem("warmup", `Warm-up: ${kind}`);
  try {
    const body = { kind };
    if (kind === "members") body.ids = memberIds($("#warmup-ids").value);
    const answer = await call(`${API}/warmup`, { method: "POST", body });
    show(item, { state: "PENDING" });
    await follow(item, answer.task_id);
  } catch (error) {
    failed(item, error);
  }
}

async function invalidate(event) {
  event.preventDefault();
  const dataType = $("#invalidate-type").value;
  if (!window.confirm(`Invalidate every cached ${dataType} entry? They are recomputed on use.`)) {
    return;
  }
  const item = taskItem("invalidation", `Invalidate: ${dataType}`);
  try {
    const answer = await call(`${API}/invalidation/trigger`, {
      method: "POST",
      body: { data_type: dataType },
    });
    // applied is false when Redis missed the tag bump: the API queued it for replay.
    const queued = answer.applied === false ? " · tag bump queued for replay" : "";
    const detail = `${count(answer.cleared?.deleted ?? 0)} keys cleared${queued}`;
    show(item, { state: "SUCCESS", detail });
  } catch (error) {
    failed(item, error);
  }
}

// Automatic warm-ups, shown once each in the tasks list: the one running now, or the last
// one when it started and finished between two polls. Those finished before sign-in are not
// news: the first answer only sets the baseline.
const automatic = { baseline: null };

export async function watchAutomaticWarmup() {
  const { running, last } = await call(`${API}/warmup/current`);
  if (automatic.baseline === null) {
    automatic.baseline = last?.task_id ?? "";
    if (!running?.task_id) return;
  }
  for (const warmup of [running, last]) {
    const taskId = warmup?.task_id;
    if (!taskId || taskId === automatic.baseline) continue;
    const known = [...document.querySelectorAll("#tasks .task")].some(
      (item) => item.dataset.taskId === taskId,
    );
    if (known) continue;
    const item = taskItem("warmup", `Automatic warm-up: ${warmup.reason}`);
    item.dataset.automatic = "true";
    item.dataset.taskId = taskId;
    show(item, { state: "PENDING" });
    follow(item, taskId); // not awaited: the poll goes on
  }
}

export function resetAutomaticWarmup() {
  automatic.baseline = null;
}

export function wireActions() {
  $("#warmup-kind").addEventListener("change", (event) => {
    $("#warmup-ids").hidden = event.target.value !== "members";
  });
  $("#warmup-form").addEventListener("submit", startWarmup);
  $("#invalidate-form").addEventListener("submit", invalidate);
}
