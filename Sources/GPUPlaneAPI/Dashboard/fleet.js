// The fleet (admin tokens): nodes with each GPU's health, temperature, memory and utilisation;
// cordon, uncordon and drain; tenants and their plans.
import { call, chooseTenant, get } from "./api.js";
import { at, h, show, table } from "./dom.js";
import { showError } from "./app.js";

const condition = (node, type) => (at(node, "status.conditions") || []).find((c) => c.type === type);

function nodeActions(node, refresh, context) {
  const name = at(node, "metadata.name");
  const cordoned = Boolean(at(node, "spec.unschedulable"));
  const act = (verb) => async () => {
    try {
      await call("POST", `/v1/nodes/${encodeURIComponent(name)}/${verb}`, { signal: context.signal });
      await refresh();
    } catch (error) { showError(error); }
  };
  const confirmBox = h("span", { hidden: true, class: "confirm" },
    `Drain ${name}? Its replicas go back to pending and are placed elsewhere. `,
    h("button", { type: "button", class: "destructive", "aria-label": `Yes, drain ${name}`, onclick: act("drain") }, "Drain"),
    h("button", { type: "button", onclick: () => { confirmBox.hidden = true; } }, "Keep"));
  return h("div", { class: "node-actions" },
    cordoned
      ? h("button", { type: "button", "aria-label": `Uncordon ${name}`, onclick: act("uncordon") }, "Uncordon")
      : h("button", { type: "button", "aria-label": `Cordon ${name}`, onclick: act("cordon") }, "Cordon"),
    h("button", { type: "button", class: "destructive", "aria-label": `Drain ${name}…`, onclick: () => { confirmBox.hidden = false; confirmBox.querySelector("button").focus(); } }, "Drain…"),
    confirmBox);
}

function gpuTable(node) {
  const health = new Map((at(node, "status.gpuHealth") || []).map((g) => [g.uuid, g]));
  const gpus = at(node, "spec.gpus") || [];
  const name = at(node, "metadata.name");
  return table(`GPUs of ${name}`, [
    ["GPU", (g) => g.index],
    ["Product", (g) => g.product],
    ["Health", (g) => { const s = health.get(g.uuid); return !s ? "unknown" : s.healthy ? "healthy" : `unhealthy${s.reason ? ` (${s.reason})` : ""}`; },
      (g) => { const s = health.get(g.uuid); return !s ? "" : s.healthy ? "good" : "bad"; }],
    ["Temperature", (g) => { const t = at(health.get(g.uuid), "temperatureC"); return t == null ? "-" : `${t} °C`; }],
    ["Memory used", (g) => { const m = at(health.get(g.uuid), "memoryUsedMiB"); return m == null ? "-" : `${(m / 1024).toFixed(1)} / ${((g.memoryMiB || 0) / 1024).toFixed(0)} GiB`; }],
    ["Utilisation", (g) => { const u = at(health.get(g.uuid), "utilizationPercent"); return u == null ? "-" : meter(u, `${name} GPU ${g.index} utilisation`); }],
    ["Power", (g) => { const p = at(health.get(g.uuid), "powerW"); return p == null ? "-" : `${p} W`; }],
    ["UUID", (g) => g.uuid],
  ], gpus, { empty: "No GPUs (a CPU node).", id: `gpus-${name}` });
}

function meter(percent, label) {
  return h("span", { class: "meter-cell" }, h("meter", { min: "0", max: "100", value: String(percent), "aria-label": label }), ` ${percent} %`);
}

/** `#/fleet`. */
export async function page(context) {
  const { container } = context;
  container.append(h("h2", { tabindex: "-1" }, "Fleet"));
  const nodes = h("div", { id: "nodes" });
  const tenants = h("div", { id: "tenants" });
  container.append(h("h3", {}, "Nodes"), nodes, h("h3", {}, "Tenants and plans"), tenants);

  const refresh = async () => {
    const [nodeList, replicas] = await Promise.all([context.list("/v1/nodes"), context.list("/v1/replicas")]);
    const items = (nodeList.items || []).sort((a, b) => at(a, "metadata.name").localeCompare(at(b, "metadata.name")));
    const perNode = new Map();
    for (const r of replicas.items || []) {
      const node = at(r, "binding.node");
      if (node) perNode.set(node, (perNode.get(node) || 0) + 1);
    }
    nodes.replaceChildren(
      table("Nodes", [
        ["Node", (n) => at(n, "metadata.name")],
        ["Ready", (n) => { const c = condition(n, "Ready"); return c ? (c.status ? "Ready" : `NotReady${c.message ? `: ${c.message}` : ""}`) : "unknown"; },
          (n) => ((condition(n, "Ready") || {}).status ? "good" : "bad")],
        ["GPUs healthy", (n) => { const all = at(n, "status.gpuHealth") || []; return `${all.filter((g) => g.healthy).length}/${(at(n, "spec.gpus") || []).length}`; },
          (n) => ((at(n, "status.gpuHealth") || []).every((g) => g.healthy) ? "good" : "bad")],
        ["Machine type", (n) => at(n, "spec.machineType")],
        ["Schedulable", (n) => (at(n, "spec.unschedulable") ? "cordoned" : "yes"), (n) => (at(n, "spec.unschedulable") ? "warn" : "")],
        ["Replicas", (n) => perNode.get(at(n, "metadata.name")) || 0],
        ["Address", (n) => at(n, "spec.address")],
        ["Actions", (n) => nodeActions(n, refresh, context)],
      ], items, { empty: "No nodes registered yet: start a node-agent.", id: "nodes-table" }),
      ...items.map((n) => h("section", { class: "node", "aria-label": `GPUs of ${at(n, "metadata.name")}` }, h("h4", {}, `GPUs of ${at(n, "metadata.name")}`), gpuTable(n))));
  };
  const refreshTenants = async () => {
    const answer = await get("/v1/tenants", { signal: context.signal });
    const items = (answer.items || []).sort((a, b) => a.name.localeCompare(b.name));
    const counts = await Promise.all(items.map(async (t) => {
      const tenant = encodeURIComponent(t.name);
      const [d, a] = await Promise.all([
        get(`/v1/deployments?tenant=${tenant}`, { signal: context.signal }),
        get(`/v1/applications?tenant=${tenant}`, { signal: context.signal }),
      ]);
      return [t.name, { deployments: (d.items || []).length, applications: (a.items || []).length }];
    }));
    const byName = new Map(counts);
    tenants.replaceChildren(table("Tenants", [
      ["Tenant", (t) => h("a", { href: "#/deployments", onclick: () => chooseTenant(t.name) }, t.name)],
      ["Plan", (t) => t.plan],
      ["GPU limit", (t) => t.gpu_limit],
      ["Spending limit", (t) => (t.spending_limit_usd == null ? "none" : `$${t.spending_limit_usd}`)],
      ["Deployments", (t) => show(at(byName.get(t.name), "deployments"))],
      ["Applications", (t) => show(at(byName.get(t.name), "applications"))],
    ], items, { empty: "No tenants yet.", id: "tenants-table" }));
  };
  await Promise.all([refresh(), refreshTenants()]);
  context.follow(["/v1/nodes", "/v1/replicas"], refresh);
}
