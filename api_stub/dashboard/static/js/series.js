// From stored snapshots (GET /metrics/history) to chart series, and number formatting.
//
// A snapshot's counters are cumulative since each process started, so a rate "over time" is
// the rate of what happened between two snapshots. A counter that went down means a process
// restarted in between: that interval has no rate (a gap in the line, never a false spike).

// The data types and the kinds, as GET /kinds lists them (cache.kinds on the server): filled at
// sign-in.
export const DATA_TYPES = [];
export const KINDS = [];

export function learnKinds(answer) {
  DATA_TYPES.splice(0, DATA_TYPES.length, ...answer.data_types);
  KINDS.splice(0, KINDS.length, ...answer.kinds.map((kind) => kind.name));
}

const served = (c) => (c.hits ?? 0) + (c.stale ?? 0) + (c.negative_hits ?? 0);
const lookups = (c) => served(c) + (c.misses ?? 0);
const operations = (c) => lookups(c) + (c.writes ?? 0) + (c.loads ?? 0);
const errors = (c) => (c.errors ?? 0) + (c.load_errors ?? 0);

// part / whole of the increase between two counter sets; null when unknown.
function ratio(before, after, part, whole) {
  if (!before || !after) return null;
  const dPart = part(after) - part(before);
  const dWhole = whole(after) - whole(before);
  if (dPart < 0 || dWhole <= 0) return null;
  return dPart / dWhole;
}

export const seconds = (iso) => Date.parse(iso) / 1000;

// {times, labels, columns}: one column of interval hit rates per data type seen.
export function hitRates(rows) {
  const labels = DATA_TYPES.filter((name) => rows.some((row) => row.total?.by_type?.[name]));
  const columns = labels.map((name) =>
    rows.map((row, i) =>
      i === 0
        ? null
        : ratio(rows[i - 1].total?.by_type?.[name], row.total?.by_type?.[name], served, lookups),
    ),
  );
  return { times: rows.map((row) => seconds(row.taken_at)), labels, columns };
}

// Errors / operations (lookups, writes, loads) over each interval, all data types together.
export function errorRates(rows) {
  const column = rows.map((row, i) =>
    i === 0 ? null : ratio(rows[i - 1].total?.total, row.total?.total, errors, operations),
  );
  return {
    times: rows.map((row) => seconds(row.taken_at)),
    labels: ["all types"],
    columns: [column],
  };
}

export function memory(rows) {
  const used = rows.map((row) => row.redis?.used_memory ?? null);
  const limit = rows.map((row) => row.redis?.maxmemory || null); // 0 means no limit
  return {
    times: rows.map((row) => seconds(row.taken_at)),
    labels: ["used", "maxmemory"],
    columns: [used, limit],
  };
}

// --- latency per kind ------------------------------------------------------------------------
// Each snapshot holds the latency of its own interval (since the snapshot before it), merged
// over every API process: {kinds: {<kind>: {cached|uncached: {count, p50, p95, p99}}}}. A kind
// or outcome without requests in an interval is absent: a gap in its line.
export const OUTCOMES = ["cached", "uncached"];

// The kinds in the rows' latency, in the registry's order (unknown ones after, by name).
export function latencyKinds(rows) {
  const seen = new Set();
  for (const row of rows) for (const kind of Object.keys(row.latency?.kinds ?? {})) seen.add(kind);
  const rank = (kind) => (KINDS.includes(kind) ? KINDS.indexOf(kind) : KINDS.length);
  return [...seen].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

// {times, labels, columns}: "<kind> cached" and "<kind> uncached" at `quantile`, for every kind
// in the rows (or only `kind`), for the outcomes that had requests at some point.
export function latencyHistory(rows, quantile, kind = "") {
  const labels = [];
  const columns = [];
  for (const name of latencyKinds(rows)) {
    if (kind && name !== kind) continue;
    for (const outcome of OUTCOMES) {
      const column = rows.map((row) => row.latency?.kinds?.[name]?.[outcome]?.[quantile] ?? null);
      if (!rows.some((row) => row.latency?.kinds?.[name]?.[outcome])) continue;
      labels.push(`${name} ${outcome}`);
      columns.push(column);
    }
  }
  return { times: rows.map((row) => seconds(row.taken_at)), labels, columns };
}

export function lastValue(column) {
  for (let i = column.length - 1; i >= 0; i--) if (column[i] !== null) return column[i];
  return null;
}

// --- formatting ------------------------------------------------------------------------------
const DASH = "—";

export function percent(value, digits = 1) {
  return value === null || value === undefined ? DASH : `${(value * 100).toFixed(digits)}%`;
}

export function bytes(value, digits = 1) {
  if (value === null || value === undefined) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let scaled = Number(value);
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${scaled.toFixed(unit === 0 ? 0 : digits)} ${units[unit]}`;
}

export function count(value) {
  return value === null || value === undefined ? DASH : Number(value).toLocaleString("en-US");
}

export function duration(secondsValue) {
  if (secondsValue === null || secondsValue === undefined) return DASH;
  if (secondsValue === 0) return "0 s";
  if (secondsValue < 0.001) return `${(secondsValue * 1e6).toFixed(0)} µs`;
  if (secondsValue < 1) return `${(secondsValue * 1000).toFixed(secondsValue < 0.01 ? 2 : 1)} ms`;
  if (secondsValue < 120) return `${secondsValue.toFixed(1)} s`;
  return `${(secondsValue / 60).toFixed(1)} min`;
}

export function clock(date) {
  return date.toLocaleTimeString("en-GB", { hour12: false });
}

export function since(iso) {
  const age = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(age)) return DASH;
  if (age < 90) return `${Math.max(0, Math.round(age))} s ago`;
  if (age < 5400) return `${Math.round(age / 60)} min ago`;
  if (age < 172800) return `${Math.round(age / 3600)} h ago`;
  return `${Math.round(age / 86400)} d ago`;
}
