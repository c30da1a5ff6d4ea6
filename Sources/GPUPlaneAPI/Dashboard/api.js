// The dashboard's only way to the api-server: the same REST routes and authorisation as the CLI.
// The token lives in this tab's sessionStorage and goes in the Authorization header, to this
// origin only; it never appears in a URL.

const TOKEN_KEY = "gpuplane-token";
const TENANT_KEY = "gpuplane-tenant";
/** Every call but a watch gives up after this long. */
const CALL_TIMEOUT_MS = 20000;

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(value) { sessionStorage.setItem(TOKEN_KEY, value); }
export function forgetToken() { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(TENANT_KEY); }

/** Who signed in: `{role: "admin" | "user", tenant, plan, tenants}`; set by `signIn`. */
export const session = { role: null, tenant: null, plan: null, tenants: [] };

/** The tenant an admin looks at (the tenant filter), kept with the token in this tab. */
export function chosenTenant() { return sessionStorage.getItem(TENANT_KEY) || ""; }
export function chooseTenant(name) { sessionStorage.setItem(TENANT_KEY, name); }

/** A failed call: the HTTP status (0: no answer), the API's error code, message and body. */
export class APIError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body || {};
  }
  /** Findings of a refused manifest or body (422), each with path, line and column. */
  get details() { return this.body.details || []; }
  get field() { return this.body.error && this.body.error.field; }
}

/** `path` with `?tenant=` added for an admin acting for the chosen tenant (users' is their own). */
export function scoped(path) {
  if (session.role !== "admin") return path;
  const tenant = chosenTenant();
  if (!tenant) return path;
  return path + (path.includes("?") ? "&" : "?") + "tenant=" + encodeURIComponent(tenant);
}

function unreachable(error) {
  return new APIError(0, "unreachable", `The api-server at ${location.origin} does not answer (${error.name === "TimeoutError" ? "timed out" : "connection failed"}). Check that it runs, then retry.`);
}

function signals(signal, timeoutMs) {
  const timeout = AbortSignal.timeout(timeoutMs);
  if (!signal) return timeout;
  if (AbortSignal.any) return AbortSignal.any([signal, timeout]);
  // Browsers before AbortSignal.any (2024): one controller that either aborts.
  const both = new AbortController();
  for (const s of [signal, timeout]) s.addEventListener("abort", () => both.abort(s.reason), { once: true });
  return both.signal;
}

async function failure(response) {
  let body = {};
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  const code = (body.error && body.error.code) || "";
  let message = (body.error && body.error.message) || `HTTP ${response.status}`;
  if (response.status === 401) message = "Your token is unknown, revoked or expired: sign in again with a valid token.";
  if (response.status === 429 && code === "rate_limited") message = `Too many unknown tokens from this address: ${message}`;
  if (response.status === 503) message = `The cluster is unavailable right now (${message}); try again shortly.`;
  const error = new APIError(response.status, code, message, body);
  if (response.status === 401) window.dispatchEvent(new CustomEvent("gpuplane-unauthorized", { detail: error }));
  return error;
}

/**
 * One REST call. `body` is sent as JSON unless it is a string (a manifest, sent as is).
 * Answers the decoded JSON (null for 204); throws APIError.
 */
export async function call(method, path, { body, signal, headers = {} } = {}) {
  const init = { method, cache: "no-store", headers: { Authorization: `Bearer ${token()}`, ...headers }, signal: signals(signal, CALL_TIMEOUT_MS) };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    if (!init.headers["Content-Type"]) init.headers["Content-Type"] = typeof body === "string" ? "application/yaml" : "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (signal && signal.aborted) throw error;
    throw unreachable(error);
  }
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, options) => call("GET", path, options);

/**
 * Follows a list route's watch (`?watch=true&resourceVersion=N`, newline-delimited JSON) with
 * fetch and a stream reader, since the watch needs the Authorization header (EventSource
 * cannot send one). Calls `onChange(event)` for each ADDED/MODIFIED/DELETED line. On a cut
 * stream it reconnects from the last resourceVersion seen; on 410 (compacted) it calls
 * `onChange({type: "RESYNC"})` and watches from now. Stops when `signal` aborts.
 * `onState(state)` hears "live", "reconnecting" or an APIError.
 */
export async function watch(path, resourceVersion, { signal, onChange, onState = () => {} }) {
  let version = resourceVersion;
  let delay = 500;
  while (!signal.aborted) {
    const url = path + (path.includes("?") ? "&" : "?") + "watch=true" + (version ? `&resourceVersion=${encodeURIComponent(version)}` : "");
    try {
      const response = await fetch(url, { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store", signal });
      if (!response.ok) {
        const error = await failure(response);
        onState(error);
        if (response.status === 401 || response.status === 403 || response.status === 404) return;
        throw error;
      }
      onState("live");
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          if (!line) continue;
          let event;
          try { event = JSON.parse(line); } catch (_) { continue; }
          if (event.type === "ERROR") {
            version = null;
            onChange({ type: "RESYNC" });
            continue;
          }
          if (event.resourceVersion) version = event.resourceVersion;
          if (event.type !== "BOOKMARK") onChange(event);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (!(error instanceof APIError)) onState(unreachable(error));
    }
    if (signal.aborted) return;
    onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

/**
 * Finds out who the token belongs to, with the routes every CLI user has: an admin may list
 * tenants; a user may not (403) and reads its tenant and plan from its usage.
 */
export async function signIn() {
  session.role = null;
  try {
    const tenants = await get("/v1/tenants");
    session.role = "admin";
    session.tenants = (tenants.items || []).map((t) => t.name).sort();
    session.tenant = null;
    session.plan = null;
    if (!session.tenants.includes(chosenTenant())) chooseTenant(session.tenants[0] || "");
  } catch (error) {
    if (error.status !== 403) throw error;
    const usage = await get("/v1/usage");
    session.role = "user";
    session.tenant = usage.tenant;
    session.plan = usage.plan;
    session.tenants = [usage.tenant];
  }
  return session;
}

/** The tenant the pages show: the user's own, or the admin's chosen one. */
export function currentTenant() { return session.role === "admin" ? chosenTenant() : session.tenant; }
