// The meshlet web UI: one view at a time, chosen by the location's hash (#services, ...).
// Services and their instances follow blocking queries; the other views poll.

import { Unauthenticated, NotFoundError, clearToken, get, pause, setToken,
  takeTokenFromFragment, token, watch } from "./api.js";
import { el, fmt, health, table } from "./dom.js";
import { render as renderGraph } from "./graph.js";

const POLL_MS = 5000;
const view = () => document.getElementById("view");
let running = null; // the AbortController of the view on screen

function status(text) { document.getElementById("status").textContent = text; }

function showLogin(text) {
  running?.abort();
  view().replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("logout").hidden = true;
  document.getElementById("login-error").textContent = text || "";
  document.getElementById("token").focus();
}

// What a failed call shows; false stops the view's loop (the login form took over).
function failed(err) {
  if (err instanceof Unauthenticated) { showLogin(token() ? "The token was refused." : ""); return false; }
  status(`error: ${err.message}`);
  return true;
}

async function poll(load, signal) {
  while (!signal.aborted) {
    try { await load(); status(`updated ${new Date().toLocaleTimeString()}`); }
    catch (err) { if (signal.aborted || failed(err) === false) return; }
    await pause(POLL_MS, signal);
  }
}

// --- views -------------------------------------------------------------------------

function counts(instances) {
  const c = { passing: 0, warning: 0, critical: 0 };
  for (const i of instances) c[i.status] = (c[i.status] ?? 0) + 1;
  return c;
}

async function servicesView(root, signal) {
  root.append(el("h2", {}, "Services"));
  const summary = el("div", { id: "services" });
  const detail = el("div", { id: "instances" });
  root.append(summary, detail);
  await watch("/v1/services", async (services) => {
    const all = await Promise.all(services.map(async (s) => {
      try { return [s, (await get(`/v1/services/${encodeURIComponent(s.name)}/instances`, { signal })).body]; }
      catch (err) { if (err instanceof NotFoundError) return [s, []]; throw err; }
    }));
    summary.replaceChildren(table(["service", "instances", "passing", "warning", "critical", "tags"],
      all.map(([s, insts]) => {
        const c = counts(insts);
        return [el("a", { href: `#services/${s.name}`, class: "link" }, s.name), String(insts.length),
          el("span", { class: "passing" }, String(c.passing)),
          el("span", { class: "warning" }, String(c.warning)),
          el("span", { class: "critical" }, String(c.critical)),
          (s.tags || []).map((t) => el("span", { class: "badge" }, t))];
      }), { "data-testid": "services" }));
    detail.replaceChildren(...all.map(([s, insts]) => el("div", { "data-service": s.name },
      el("h3", {}, s.name),
      table(["instance", "address", "node", "zone", "health", "output"], insts.map((i) => [
        i.id, `${i.address}:${i.port}`, i.node || "–", i.zone || "–",
        el("span", { class: i.status, "data-instance": i.id }, i.status), i.output || ""])))));
    status(`updated ${new Date().toLocaleTimeString()} (live)`);
  }, signal, failed);
}

async function topologyView(root, signal) {
  root.append(el("h2", {}, "Topology"));
  const box = el("div", { id: "topology" });
  root.append(box);
  await poll(async () => {
    let signals;
    try { signals = (await get("/v1/signals", { signal })).body; }
    catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      box.replaceChildren(el("p", { class: "muted", id: "no-traffic" }, "no traffic data"));
      return;
    }
    const rows = (signals.services || []).map((s) => [s.service, `${s.scraped}/${s.instances}`,
      fmt(s.rps), s.error_rate === null ? "–" : fmt(s.error_rate * 100, "%"),
      s.p50 === null ? "–" : fmt(s.p50 * 1000, " ms"), s.p99 === null ? "–" : fmt(s.p99 * 1000, " ms")]);
    box.replaceChildren(renderGraph(signals),
      table(["service", "scraped", "rps", "errors", "p50", "p99"], rows),
      (signals.unreachable || []).length
        ? el("p", { class: "warning" }, `unreachable: ${signals.unreachable.join(", ")}`) : "");
  }, signal);
}

function decode(b64) {
  const bytes = Uint8Array.from(atob(b64 || ""), (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
}

async function kvView(root, signal) {
  root.append(el("h2", {}, "KV"));
  const list = el("div"), value = el("pre", { id: "kv-value" }, "choose a key");
  root.append(list, value);
  let chosen = null;
  await poll(async () => {
    const entries = (await get("/v1/kv", { signal })).body;
    list.replaceChildren(entries.length ? table(["key", "modify index"], entries.map((e) => [
      el("a", { class: "link", onclick: () => { chosen = e.key; value.textContent = decode(e.value); } }, e.key),
      String(e.modify_index)])) : el("p", { class: "muted" }, "no keys"));
    const current = entries.find((e) => e.key === chosen);
    if (current) value.textContent = decode(current.value);
  }, signal);
}

async function intentionsView(root, signal) {
  root.append(el("h2", {}, "Intentions"));
  const box = el("div");
  root.append(box);
  await poll(async () => {
    const body = (await get("/v1/intentions", { signal })).body;
    const rows = body.intentions.map((i) => {
      const { source, destination, action, ...rest } = i;
      return [source, destination, el("span", { class: action === "allow" ? "passing" : "critical" }, action),
        Object.keys(rest).length ? JSON.stringify(rest) : ""];
    });
    box.replaceChildren(el("p", {}, `default policy: ${body.default_policy}`),
      table(["source", "destination", "action", "details"], rows));
  }, signal);
}

async function raftView(root, signal) {
  root.append(el("h2", {}, "Raft"));
  const box = el("div");
  root.append(box);
  await poll(async () => {
    const s = (await get("/v1/status", { signal })).body;
    const r = s.raft || {};
    box.replaceChildren(
      table(["leader", "term", "role (this server)", "commit", "applied", "last index", "snapshot index"],
        [[s.leader || "–", String(r.term), r.role || "–", String(r.commit), String(r.applied),
          String(r.last_index), String(r.snapshot_index)]], { "data-testid": "raft" }),
      table(["member", "raft", "http", "role", "last contact", "match index"], (s.members || []).map((m) => [
        m.id, m.raft || "–", m.http || "–", m.id === s.leader ? "leader" : (m.role || "follower"),
        m.last_contact === null || m.last_contact === undefined ? "–" : fmt(m.last_contact, " s"),
        m.match_index === null || m.match_index === undefined ? "–" : String(m.match_index)])));
  }, signal);
}

async function networksView(root, signal) {
  root.append(el("h2", {}, "Networks"));
  const nets = el("div");
  root.append(nets, el("h2", {}, "Containers"));
  const ctrs = el("div");
  root.append(ctrs);
  await poll(async () => {
    const [n, c] = await Promise.all([get("/v1/networks", { signal }), get("/v1/containers", { signal })]);
    nets.replaceChildren(table(["network", "driver", "subnet", "gateway", "vni", "addresses"],
      n.body.map((x) => [x.name, x.driver, x.subnet || "–", x.gateway || "–", x.vni ?? "–",
        String(Object.keys(x.addresses || {}).length)])));
    ctrs.replaceChildren(table(["container", "node", "status", "desired", "pid", "addresses", "command"],
      c.body.map((x) => [x.name, x.node, el("span", { class: x.status === "running" ? "passing" : "warning" }, x.status),
        x.desired, x.pid ?? "–", Object.entries(x.addresses || {}).map(([k, v]) => `${k}: ${v}`).join(", "),
        (x.command || []).join(" ")])));
  }, signal);
}

async function deploymentsView(root, signal) {
  root.append(el("h2", {}, "Deployments"));
  const deps = el("div");
  root.append(deps, el("h2", {}, "Pods"));
  const pods = el("div");
  root.append(pods);
  await poll(async () => {
    const [d, p] = await Promise.all([get("/v1/objects?kind=Deployment", { signal }), get("/v1/pods", { signal })]);
    deps.replaceChildren(table(["deployment", "namespace", "generation", "replicas", "ready", "updated"],
      d.body.map((x) => {
        const spec = x.manifest?.spec || {}, st = x.status || {};
        return [x.name, x.namespace, String(x.generation), String(spec.replicas ?? "–"),
          String(st.readyReplicas ?? st.ready_replicas ?? "–"), String(st.updatedReplicas ?? st.updated_replicas ?? "–")];
      })));
    pods.replaceChildren(table(["pod", "namespace", "deployment", "node", "phase", "ready", "restarts", "address"],
      p.body.map((x) => [x.name, x.namespace, x.deployment, x.node, x.phase,
        el("span", { class: x.ready ? "passing" : "critical" }, x.ready ? "yes" : "no"),
        String(x.restarts), x.address || "–"])));
  }, signal);
}

const VIEWS = { services: servicesView, topology: topologyView, kv: kvView, intentions: intentionsView,
  raft: raftView, networks: networksView, deployments: deploymentsView };

// --- routing and login -------------------------------------------------------------

function show() {
  running?.abort();
  running = new AbortController();
  const name = (window.location.hash.slice(1).split("/")[0]) || "services";
  const fn = VIEWS[name] || servicesView;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
  }
  document.getElementById("login").hidden = true;
  document.getElementById("logout").hidden = !token();
  const root = view();
  root.replaceChildren();
  status("loading…");
  fn(root, running.signal).catch((err) => failed(err));
}

async function login(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  const secret = input.value.trim();
  try {
    await get("/v1/services", { tokenOverride: secret });
  } catch (err) {
    document.getElementById("login-error").textContent =
      err instanceof Unauthenticated ? "That token was refused." : `error: ${err.message}`;
    return;
  }
  setToken(secret);
  input.value = "";
  show();
}

function logout() {
  clearToken();
  running?.abort();
  showLogin("Logged out.");
}

function start() {
  takeTokenFromFragment();
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", () => { takeTokenFromFragment(); show(); });
  show();
}

start();
