// The cards that are not time charts: tiles, health, latency, keys, breakers, reports.
// Everything is set with textContent: report alerts and process names are data, never HTML.

import { bars, el } from "./charts.js";
import { DATA_TYPES, bytes, count, duration, percent, since } from "./series.js";

const $ = (selector) => document.querySelector(selector);

function tile(id, value, sub) {
  const node = $(`#${id}`);
  node.querySelector(".value").textContent = value;
  if (sub !== undefined) node.querySelector(".sub").textContent = sub;
  return node;
}

function badge(text, tone) {
  const node = el("span", `badge ${tone}`, text);
  node.dataset.tone = tone;
  return node;
}

const BREAKER_TONE = { closed: "ok", half_open: "warn", open: "bad" };
const STATUS_TONE = { ok: "ok", alert: "bad", no_data: "muted", failed: "bad" };

// --- GET /metrics ----------------------------------------------------------------------------
export function renderTiles(metrics) {
  const total = metrics.overall?.total ?? {};
  tile("tile-hit-rate", percent(total.hit_rate), `${count(total.lookups)} lookups since start`);
  tile("tile-error-rate", percent(total.error_rate, 2), `${count(total.errors)} errors`);

  const redis = metrics.redis ?? {};
  const memory = tile(
    "tile-memory",
    redis.up === false ? "down" : bytes(redis.used_memory),
    redis.maxmemory ? `of ${bytes(redis.maxmemory)} maxmemory` : "no maxmemory set",
  );
  const ratio = redis.memory_ratio ?? 0;
  memory.querySelector(".meter > span").style.width = `${Math.min(100, ratio * 100)}%`;
  memory.dataset.ratio = String(ratio);

  const wb = metrics.writebehind ?? {};
  if (wb.available === false) {
    tile("tile-backlog", "unavailable", wb.error ?? "");
    tile("tile-lag", "—", "");
  } else {
    tile("tile-backlog", count(wb.backlog), `${count(wb.pending)} pending delivery`);
    tile("tile-lag", duration(wb.lag_s), `${count(wb.dead_letters)} dead letters`);
  }

  const breaker = metrics.this_process?.breaker ?? {};
  const node = tile(
    "tile-breaker",
    (breaker.state ?? "—").replace("_", " "),
    `opened ${count(breaker.times_opened ?? 0)} times`,
  );
  node.dataset.state = breaker.state ?? "";
  renderConsistency(metrics.consistency ?? {});
}

// "N nines within M s": -log10 of the inconsistent share; when every check agreed the sample
// size bounds what can be shown (">= log10(checked)").
function nines(window) {
  if (!window.checked) return "—";
  const figure = window.nines.toFixed(1);
  return window.all_consistent ? `≥ ${figure} nines` : `${figure} nines`;
}

function renderConsistency(found) {
  if (found.available === false) {
    tile("tile-consistency", "unavailable", found.error ?? "");
    return;
  }
  const windows = Object.entries(found.windows ?? {});
  if (windows.length === 0) return;
  const [first, ...rest] = windows;
  const node = tile(
    "tile-consistency",
    `${nines(first[1])} within ${first[0]} s`,
    [
      ...rest.map(([name, w]) => `${nines(w)} within ${name} s`),
      `${count(found.sampled)} sampled`,
      `cost ${count(found.checks)} checks, ${duration(found.check_seconds)}`,
    ].join(" · "),
  );
  node.dataset.inconsistent = String(windows.reduce((n, [, w]) => n + w.inconsistent, 0));
}

export function renderLatency(requests) {
  const cached = requests?.cached ?? {};
  const uncached = requests?.uncached ?? {};
  $("#latency-counts").textContent =
    `${count(cached.count ?? 0)} cached · ${count(uncached.count ?? 0)} uncached`;
  const rows = [];
  for (const q of ["p50", "p95", "p99"]) {
    for (const [group, figures, color] of [
      ["cached", cached, "#2563eb"],
      ["uncached", uncached, "#f59e0b"],
    ]) {
      if (!figures.count) continue;
      const value = figures[q] ?? null;
      rows.push({ label: `${q} ${group}`, group, value, text: duration(value), color });
    }
  }
  bars($("#latency"), rows, { empty: "No requests to cached routes yet" });
}

// The key distribution of the latest snapshot (sampled by the snapshot job).
export function renderKeyspace(keyspace) {
  const patterns = Object.entries(keyspace?.patterns ?? {}).sort(
    ([, a], [, b]) => (b.keys ?? 0) - (a.keys ?? 0),
  );
  $("#keyspace-note").textContent = keyspace
    ? `${count(keyspace.dbsize)} keys in the database${keyspace.complete ? "" : " (estimated)"}`
    : "";
  bars(
    $("#keyspace"),
    patterns.map(([name, figures]) => ({
      label: name,
      value: figures.keys ?? 0,
      text:
        figures.bytes === null
          ? count(figures.keys)
          : `${count(figures.keys)} · ${bytes(figures.bytes)}`,
      color: DATA_TYPES.includes(name) ? undefined : "#94a3b8",
    })),
    { empty: "No snapshot yet" },
  );
}

export function renderBreakers(metrics) {
  const mine = metrics.this_process ?? {};
  const rows = [
    { name: mine.process ?? "this API", role: "api (this)", state: mine.breaker?.state, age: 0 },
    ...Object.entries(metrics.processes ?? {}).map(([name, process]) => ({
      name,
      role: process.role ?? "—",
      state: process.breaker,
      age: process.age_s,
    })),
  ];
  $("#breakers tbody").replaceChildren(
    ...rows.map((row) => {
      const line = el("tr");
      line.dataset.process = row.name;
      line.dataset.state = row.state ?? "";
      const state = el("td");
      state.append(
        badge((row.state ?? "unknown").replace("_", " "), BREAKER_TONE[row.state] ?? "muted"),
      );
      line.append(
        el("td", "mono", row.name),
        el("td", "", row.role),
        state,
        el("td", "muted", row.age === 0 ? "now" : `${duration(row.age)} ago`),
      );
      return line;
    }),
  );
}

// --- GET /health -----------------------------------------------------------------------------
export function renderHealth(health) {
  const failing = health.failing ?? [];
  const pill = $("#health");
  pill.hidden = false;
  pill.dataset.status = health.status;
  $("#health-text").textContent =
    health.status === "ok" ? "Healthy" : `Failing: ${failing.join(", ")}`;
  $("#checks").replaceChildren(
    ...Object.entries(health.checks ?? {}).map(([name, check]) => {
      const chip = el("li", check.ok ? "ok" : "bad", name);
      chip.dataset.check = name;
      chip.title = check.error ?? (check.ok ? "ok" : "failing");
      return chip;
    }),
  );
  // A tile is coloured by the health check that judges its figure.
  for (const node of document.querySelectorAll(".tile[data-check]")) {
    const check = health.checks?.[node.dataset.check];
    node.dataset.tone = check === undefined ? "" : check.ok ? "ok" : "bad";
  }
}

// --- GET /reports ----------------------------------------------------------------------------
export function renderReports(reports) {
  const body = $("#reports tbody");
  if (!reports.length) {
    const line = el("tr");
    const cell = el("td", "empty", "No maintenance report yet");
    cell.colSpan = 5;
    line.append(cell);
    body.replaceChildren(line);
    return;
  }
  body.replaceChildren(
    ...reports.map((report) => {
      const line = el("tr", report.alert ? "alerting" : "");
      line.dataset.job = report.job;
      line.dataset.status = report.status;
      const status = el("td");
      status.append(badge(report.status.replace("_", " "), STATUS_TONE[report.status] ?? "muted"));
      const created = el("td", "muted", since(report.created_at));
      created.title = report.created_at;
      line.append(
        el("td", "mono", report.job),
        el("td", "mono", report.period),
        status,
        el("td", "alert", report.alert ?? ""),
        created,
      );
      return line;
    }),
  );
}

// GET /kinds: one row per cached kind, and the choices of the action forms.
export function renderKinds(answer) {
  $("#kinds tbody").replaceChildren(
    ...answer.kinds.map((kind) => {
      const line = el("tr");
      line.dataset.kind = kind.name;
      line.append(
        el("td", "mono", kind.name),
        el("td", "mono", kind.data_type),
        el("td", "", duration(kind.ttl)),
        el("td", "", kind.storage),
        el("td", "mono", kind.tags.join(", ")),
        el("td", "", kind.warm),
        el("td", "mono", kind.invalidated_by.join(", ")),
        el("td", "muted", kind.description),
      );
      return line;
    }),
  );
  const options = (select, values) =>
    $(select).replaceChildren(
      ...values.map((value) => {
        const option = el("option", "", value);
        option.value = value;
        return option;
      }),
    );
  options("#warmup-kind", answer.warmups);
  options("#invalidate-type", answer.invalidatable);
}
