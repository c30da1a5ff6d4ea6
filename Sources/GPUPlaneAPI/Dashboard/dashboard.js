// gpuplane's dashboard: read-only views over the REST API, refreshed every 5 seconds.
// The token lives in sessionStorage and is sent only to this origin. Every value is written
// with textContent, never as HTML.
"use strict";

const REFRESH_MS = 5000;
const cell = (value) => (value === undefined || value === null || value === "" ? "-" : Array.isArray(value) ? (value.length ? value.join(",") : "-") : String(value));
const at = (object, path) => path.split(".").reduce((value, key) => (value == null ? undefined : value[key]), object);

// Each view: the API path it lists, and its columns as [header, value of one item, class?].
const VIEWS = {
  deployments: {
    path: "/v1/deployments",
    columns: [
      ["NAME", (d) => d.full_name],
      ["GPU", (d) => `${d.num_gpus}×${d.gpu}`],
      ["BATCH", (d) => d.max_batch_size],
      ["INSTANCES", (d) => `${at(d, "status.instances_running")}/${at(d, "status.instances_wanted")}`],
      ["MIN-MAX", (d) => `${at(d, "settings.min_instances")}-${at(d, "settings.max_instances")}`],
      ["STATE", (d) => at(d, "status.state"), (d) => (at(d, "status.state") === "running" ? "good" : "")],
      ["MESSAGE", (d) => at(d, "status.message")],
    ],
  },
  applications: {
    path: "/v1/applications",
    columns: [
      ["NAME", (a) => at(a, "metadata.name")],
      ["PODS", (a) => `${at(a, "status.podsRunning")}/${at(a, "status.podsWanted")}`],
      ["CREATED", (a) => at(a, "metadata.created")],
    ],
  },
  replicas: {
    path: "/v1/replicas",
    columns: [
      ["NAME", (r) => at(r, "metadata.name")],
      ["NODE", (r) => at(r, "binding.node")],
      ["GPUS", (r) => at(r, "binding.gpuIndices")],
      ["PHASE", (r) => at(r, "status.phase"), (r) => (at(r, "status.phase") === "running" ? "good" : at(r, "status.phase") === "failed" ? "bad" : "")],
      ["RESTARTS", (r) => at(r, "status.restarts")],
      ["MESSAGE", (r) => at(r, "status.message")],
    ],
  },
  modelservers: {
    path: "/v1/modelservers",
    adminOnly: true,
    columns: [
      ["NAME", (s) => at(s, "metadata.name")],
      ["SLUG", (s) => at(s, "spec.slug")],
      ["NODE", (s) => at(s, "binding.node")],
      ["READY", (s) => at(s, "status.ready"), (s) => (at(s, "status.ready") ? "good" : "bad")],
      ["ATTACHED", (s) => at(s, "status.attachedReplicas")],
    ],
  },
  nodes: {
    path: "/v1/nodes",
    adminOnly: true,
    columns: [
      ["NAME", (n) => at(n, "metadata.name")],
      ["READY", (n) => ((at(n, "status.conditions") || []).find((c) => c.type === "Ready") || {}).status, (n) => (((at(n, "status.conditions") || []).find((c) => c.type === "Ready") || {}).status ? "good" : "bad")],
      ["TYPE", (n) => at(n, "spec.machineType")],
      ["GPUS", (n) => (at(n, "spec.gpus") || []).length],
      ["CORDONED", (n) => at(n, "spec.unschedulable")],
      ["CONTAINERS", (n) => at(n, "status.containers")],
    ],
  },
  usage: {
    path: "/v1/usage",
    rows: (usage) => usage.modes || [],
    columns: [
      ["MODE", (m) => m.mode],
      ["SECONDS", (m) => m.seconds],
      ["INCLUDED HOURS LEFT", (m) => m.includedHoursLeft],
      ["COST USD", (m) => m.costUSD],
    ],
  },
  events: {
    path: "/v1/events",
    columns: [
      ["TYPE", (e) => at(e, "spec.severity"), (e) => (at(e, "spec.severity") === "Warning" ? "bad" : "")],
      ["REASON", (e) => at(e, "spec.reason")],
      ["OBJECT", (e) => `${at(e, "spec.involved.kind")}/${at(e, "spec.involved.name")}`],
      ["COUNT", (e) => at(e, "spec.count")],
      ["MESSAGE", (e) => at(e, "spec.message")],
    ],
  },
};

function token() { return sessionStorage.getItem("gpuplane-token") || ""; }

async function get(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function render(container, view, items) {
  container.replaceChildren();
  if (!items.length) {
    const empty = document.createElement("p");
    empty.textContent = "none";
    container.append(empty);
    return;
  }
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const [header] of view.columns) {
    const th = document.createElement("th");
    th.textContent = header;
    head.append(th);
  }
  const body = table.createTBody();
  for (const item of items) {
    const row = body.insertRow();
    for (const [, value, classOf] of view.columns) {
      const td = row.insertCell();
      td.textContent = cell(value(item));
      if (classOf) td.className = classOf(item);
    }
  }
  container.append(table);
}

async function refresh() {
  const status = document.getElementById("status");
  if (!token()) return;
  let failures = 0;
  for (const [name, view] of Object.entries(VIEWS)) {
    const section = document.querySelector(`section[data-view="${name}"]`);
    try {
      const answer = await get(view.path);
      const items = view.rows ? view.rows(answer) : answer.items || [];
      section.hidden = false;
      render(section.querySelector(".table"), view, items);
    } catch (error) {
      if (view.adminOnly && error.status === 403) {
        section.hidden = true; // not this token's to see
        continue;
      }
      failures += 1;
      status.textContent = `${view.path}: ${error.message}`;
      status.className = "error";
      if (error.status === 401) return;
    }
  }
  if (!failures) {
    status.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshing every ${REFRESH_MS / 1000} s.`;
    status.className = "";
  }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = document.getElementById("token");
  sessionStorage.setItem("gpuplane-token", field.value.trim());
  field.value = "";
  refresh();
});
document.getElementById("forget").addEventListener("click", () => {
  sessionStorage.removeItem("gpuplane-token");
  for (const section of document.querySelectorAll("section")) section.querySelector(".table").replaceChildren();
  document.getElementById("status").textContent = "Token forgotten.";
});
refresh();
setInterval(refresh, REFRESH_MS);
