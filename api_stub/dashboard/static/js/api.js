// Calls to the management API with the token of this tab, and the polling loops.
//
// Paths are relative to the page (/dashboard), so the app keeps working behind a proxy that
// serves it under a prefix.

export const API = "api/v1/cache";
const TOKEN_KEY = "membership-cache.token";

export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(`HTTP ${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter; // seconds, on a 429
  }
}

// sessionStorage: the token is gone when the tab closes, and other tabs never see it.
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

// One JSON call. `accept` lists error statuses whose body is still an answer (a failing
// /health is a 503 that names the failing checks).
export async function call(path, { method = "GET", body, accept = [], presented } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = presented ?? token.get();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const data = await response.json().catch(() => null);
  if (response.ok || accept.includes(response.status)) return data;
  const retryAfter = Number(response.headers.get("Retry-After")) || undefined;
  throw new ApiError(response.status, data?.detail ?? response.statusText, retryAfter);
}

export function query(params) {
  const pairs = Object.entries(params).filter(([, value]) => value !== undefined);
  return new URLSearchParams(pairs).toString();
}

// Run `task` now and then every `intervalMs`, never two at once, skipped while the tab is
// hidden (every call counts against the token's rate limit). `onError` may return a delay
// in ms to wait before the next try (a 429's Retry-After). Returns a stop function.
export function poll(intervalMs, task, onError) {
  let stopped = false;
  let timer;
  async function tick() {
    let wait = intervalMs;
    if (!document.hidden) {
      try {
        await task();
      } catch (error) {
        wait = onError(error) ?? intervalMs;
      }
    }
    if (!stopped) timer = setTimeout(tick, wait);
  }
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
