// The dashboard: sign in with a token, then poll the management API and redraw.
//
//   every  5 s   GET /metrics (tiles, latency, breakers, write-behind) and the new rows of
//                GET /metrics/history (the charts, the latency history per kind among them)
//   every  5 s   GET /warmup/current (an automatic warm-up joins the tasks list)
//   every 15 s   GET /health (the header and the tiles' colours)
//   every 30 s   GET /reports
//   at sign-in   GET /kinds (the data types, the kinds table, the choices of the actions)
//
// About 42 calls a minute, well under the default rate limit of a token (120 a minute),
// leaving room for a warm-up's progress (one call a second while it runs).

import {
  allowActions,
  resetAutomaticWarmup,
  watchAutomaticWarmup,
  wireActions,
} from "./actions.js";
import { API, ApiError, call, poll, query, token } from "./api.js";
import {
  renderBreakers,
  renderHealth,
  renderKeyspace,
  renderKinds,
  renderLatency,
  renderReports,
  renderTiles,
} from "./cards.js";
import { BYTE_STEPS, TimeChart, fromZero, paletteOf } from "./charts.js";
import * as series from "./series.js";

const $ = (selector) => document.querySelector(selector);
const HISTORY_PAGE = 1440; // the most rows /metrics/history returns at once
const HISTORY_PAGES = 10;
const LIVE_POINTS = 720; // an hour of write-behind figures at one poll every 5 s

const state = {
  range: 3600, // seconds of history shown
  history: [], // snapshots, oldest first
  live: { times: [], backlog: [], lag: [] },
  stops: [],
  charts: null,
};

// --- history ---------------------------------------------------------------------------------
// The first call reads the whole range; later ones only what was stored since the newest row
// (the boundary row comes again and is skipped by id).
async function refreshHistory() {
  const start = new Date(Date.now() - state.range * 1000);
  let since = state.history.at(-1)?.taken_at ?? start.toISOString();
  for (let page = 0; page < HISTORY_PAGES; page++) {
    const answer = await call(`${API}/metrics/history?${query({ since, limit: HISTORY_PAGE })}`);
    const known = new Set(state.history.map((row) => row.id));
    state.history.push(...answer.snapshots.filter((row) => !known.has(row.id)));
    if (!answer.truncated || !answer.snapshots.length) break;
    since = answer.snapshots.at(-1).taken_at;
  }
  const cutoff = start.getTime();
  state.history = state.history.filter((row) => Date.parse(row.taken_at) >= cutoff);

  const { charts, history } = state;
  charts.hitRate.update(series.hitRates(history));
  charts.errorRate.update(series.errorRates(history));
  charts.memory.update(series.memory(history));
  renderLatencyHistory();
  renderKeyspace(history.at(-1)?.keyspace ?? null);
}

// The kinds to choose from are those in the rows (the server's names), the registry's order.
function renderLatencyHistory() {
  const choice = $("#latency-kind");
  const kinds = series.latencyKinds(state.history);
  const known = [...choice.options].slice(1).map((option) => option.value);
  if (known.join("|") !== kinds.join("|")) {
    const chosen = choice.value;
    choice.replaceChildren(
      new Option("every kind", ""),
      ...kinds.map((kind) => new Option(kind, kind)),
    );
    choice.value = kinds.includes(chosen) ? chosen : "";
  }
  const quantile = $("#latency-quantile").value;
  state.charts.latency.update(series.latencyHistory(state.history, quantile, choice.value));
}

// --- live figures ----------------------------------------------------------------------------
async function refreshMetrics() {
  const metrics = await call(`${API}/metrics`);
  renderTiles(metrics);
  renderLatency(metrics.latency?.requests);
  renderBreakers(metrics);

  // Write-behind figures are not stored in snapshots: this chart is what the page has seen.
  const wb = metrics.writebehind ?? {};
  const live = state.live;
  live.times.push(metrics.taken_at);
  live.backlog.push(wb.available === false ? null : wb.backlog);
  live.lag.push(wb.available === false ? null : wb.lag_s);
  for (const column of Object.values(live)) column.splice(0, column.length - LIVE_POINTS);
  state.charts.writebehind.update({
    times: live.times,
    labels: ["backlog", "lag"],
    columns: [live.backlog, live.lag],
  });
}

async function refreshLive() {
  await Promise.all([refreshMetrics(), refreshHistory()]);
  $("#updated").textContent = `Updated ${series.clock(new Date())}`;
}

async function refreshHealth() {
  renderHealth(await call(`${API}/health`, { accept: [503] }));
}

async function learnKinds() {
  const answer = await call(`${API}/kinds`);
  series.learnKinds(answer);
  renderKinds(answer);
}

async function refreshReports() {
  renderReports((await call(`${API}/reports?${query({ limit: 8 })}`)).reports);
}

// --- errors ----------------------------------------------------------------------------------
function banner(text) {
  const node = $("#banner");
  node.textContent = text ?? "";
  node.hidden = !text;
}

// Returns how long the failing loop waits before its next try, in ms.
function onError(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut("The token was refused: sign in again.");
    return undefined;
  }
  if (error instanceof ApiError && error.status === 429) {
    const wait = error.retryAfter ?? 10;
    banner(`Rate limited: the dashboard pauses for ${wait} s.`);
    return wait * 1000;
  }
  banner(`Could not refresh: ${error.message}`);
  return undefined;
}

function every(ms, task) {
  const guarded = async () => {
    await task();
    if ($("#banner").textContent) banner(null);
  };
  state.stops.push(poll(ms, guarded, onError));
}

// --- session ---------------------------------------------------------------------------------
function charts() {
  return {
    hitRate: new TimeChart($("#chart-hit-rate"), {
      format: (v) => series.percent(v, 0),
      legend: (v) => series.percent(v, 1),
      range: [0, 1],
      height: 250,
    }),
    errorRate: new TimeChart($("#chart-error-rate"), {
      format: (v) => series.percent(v, 2),
      range: fromZero(0.01),
    }),
    memory: new TimeChart($("#chart-memory"), {
      format: (v) => series.bytes(v, 0),
      legend: series.bytes,
      range: fromZero(1024),
      incrs: BYTE_STEPS,
    }),
    latency: new TimeChart($("#chart-latency"), {
      format: series.duration,
      log: true,
      height: 260,
      // One colour per kind (its place in the registry); uncached is dashed.
      style: (label) => {
        const [kind, outcome] = label.split(" ");
        const index = series.KINDS.indexOf(kind);
        return {
          stroke: paletteOf(index < 0 ? series.KINDS.length : index),
          dash: outcome === "uncached" ? [6, 4] : undefined,
        };
      },
    }),
    writebehind: new TimeChart($("#chart-writebehind"), {
      format: series.count,
      range: fromZero(10),
      second: { label: "lag", format: series.duration, range: fromZero(1) },
    }),
  };
}

async function start(who) {
  $("#signin").hidden = true;
  $("#board").hidden = false;
  $("#session").hidden = false;
  $("#who").textContent = `${who.id} · ${who.role}`;
  $("#who").dataset.role = who.role;
  allowActions(who.role);
  state.charts ??= charts();
  await learnKinds().catch(onError); // the charts' series need the data types
  every(5000, refreshLive);
  every(5000, watchAutomaticWarmup);
  every(15000, refreshHealth);
  every(30000, refreshReports);
}

function signOut(message) {
  for (const stop of state.stops.splice(0)) stop();
  resetAutomaticWarmup();
  token.clear();
  $("#board").hidden = true;
  $("#session").hidden = true;
  $("#health").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message ?? "";
  $("#signin-error").hidden = !message;
  $("#token").focus();
}

async function signIn(presented) {
  try {
    const who = await call("dashboard/whoami", { presented });
    token.set(presented);
    start(who);
  } catch (error) {
    const refused = error instanceof ApiError && error.status === 401;
    signOut(refused ? "This token is not valid." : `Could not sign in: ${error.message}`);
  }
}

function init() {
  wireActions();
  $("#signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("#token").value.trim());
  });
  $("#signout").addEventListener("click", () => signOut());
  for (const id of ["#latency-quantile", "#latency-kind"]) {
    $(id).addEventListener("change", () => state.charts && renderLatencyHistory());
  }
  $("#range").addEventListener("change", (event) => {
    state.range = Number(event.target.value);
    state.history = [];
    refreshHistory().catch(onError);
  });
  const saved = token.get();
  if (saved) signIn(saved);
  else signOut();
}

init();
