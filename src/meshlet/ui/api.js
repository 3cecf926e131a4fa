// Calls to the /v1 API with the token kept in sessionStorage (X-Meshlet-Token).
// A 401 raises Unauthenticated, which the app answers with the login form.

const KEY = "meshlet.token";

export class Unauthenticated extends Error {}
export class NotFoundError extends Error {}

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(value) { sessionStorage.setItem(KEY, value); }
export function clearToken() { sessionStorage.removeItem(KEY); }

// `meshlet ui` opens /ui/#token=...: keep it, and take it out of the address bar at once.
export function takeTokenFromFragment() {
  const hash = window.location.hash;
  if (!hash.startsWith("#token=")) return false;
  const value = decodeURIComponent(hash.slice("#token=".length));
  history.replaceState(null, "", window.location.pathname + window.location.search);
  if (value) setToken(value);
  return Boolean(value);
}

// GET a /v1 path; returns {body, index}. `signal` aborts a blocking query.
export async function get(path, { signal, tokenOverride } = {}) {
  const headers = { "Accept": "application/json" };
  const secret = tokenOverride ?? token();
  if (secret) headers["X-Meshlet-Token"] = secret;
  const resp = await fetch(path, { headers, signal, cache: "no-store" });
  if (resp.status === 401) throw new Unauthenticated(await message(resp));
  if (resp.status === 404) throw new NotFoundError(await message(resp));
  if (!resp.ok) throw new Error(`${resp.status}: ${await message(resp)}`);
  const index = Number(resp.headers.get("X-Meshlet-Index") || 0);
  return { body: await resp.json(), index };
}

async function message(resp) {
  try {
    const body = await resp.json();
    return body?.error?.message || resp.statusText;
  } catch { return resp.statusText; }
}

// Calls `onChange(body)` for each answer of a blocking query, until `signal` aborts.
export async function watch(path, onChange, signal, onError) {
  let index = 0;
  while (!signal.aborted) {
    const sep = path.includes("?") ? "&" : "?";
    const url = index ? `${path}${sep}index=${index}&wait=30s` : path;
    try {
      const { body, index: next } = await get(url, { signal });
      // An index that went backwards (a new leader's snapshot): start over.
      index = next < index ? 0 : next;
      await onChange(body);
    } catch (err) {
      if (signal.aborted) return;
      if (onError(err) === false) return;
      await pause(2000, signal);
    }
  }
}

export function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
  });
}
