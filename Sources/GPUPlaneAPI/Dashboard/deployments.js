// Deployments (reference/custom-llm-deployments.txt): the list, the create form validated as
// you type, and the details page (scaling, instances and their loading, events, how to call
// it, delete).
import { APIError, call, currentTenant, get, scoped, session } from "./api.js";
import { at, copyable, h, notice, show, table, when } from "./dom.js";
import { showError } from "./app.js";

const GPU_TYPES = ["A100-80GB", "A100-40GB", "H100-80GB", "H200-141GB", "B200-192GB", "L40", "RTX4090", "RTX5090", "RTX-PRO-6000"];

const heading = (text) => h("h2", { tabindex: "-1" }, text);

function stateClass(state) {
  return state === "running" ? "good" : state === "failed" ? "bad" : state === "stopped" ? "" : "warn";
}

function needsTenant(context) {
  if (session.role === "admin" && !currentTenant()) {
    context.container.append(notice("warning", "There are no tenants yet: create one (gpuplane tenant create) to see its deployments."));
    return true;
  }
  return false;
}

/** `#/deployments`: each deployment's instances running against wanted, and why the rest wait. */
export async function list(context) {
  const { container } = context;
  container.append(heading(session.role === "admin" ? `Deployments of ${currentTenant() || "…"}` : "Deployments"));
  if (needsTenant(context)) return;
  container.append(h("p", {}, h("a", { href: "#/deployments/new", class: "button", id: "new-deployment" }, "Create a deployment")));
  const body = h("div", { id: "deployment-list" });
  container.append(body);
  const refresh = async () => {
    const [answer, replicas] = await Promise.all([context.list(scoped("/v1/deployments")), context.list(scoped("/v1/replicas"))]);
    const items = (answer.items || []).sort((a, b) => a.model_name.localeCompare(b.model_name));
    body.replaceChildren(table("Deployments", [
      ["Name", (d) => h("a", { href: `#/deployments/${encodeURIComponent(d.deploy_id)}` }, d.full_name)],
      ["GPUs", (d) => `${d.num_gpus} × ${d.gpu}`],
      ["Instances", (d) => `${at(d, "status.instances_running")}/${at(d, "status.instances_wanted")} running`],
      ["Min–max", (d) => `${at(d, "settings.min_instances")}–${at(d, "settings.max_instances")}`],
      ["Loading", (d) => loading(instancesOf(d, replicas.items || []))],
      ["Load", (d) => loadText(d.load)],
      ["State", (d) => at(d, "status.state"), (d) => stateClass(at(d, "status.state"))],
      ["Why the rest wait", (d) => at(d, "status.message")],
    ], items, { empty: "No deployments yet: create one to serve a model.", id: "deployments-table" }));
  };
  await refresh();
  context.follow([scoped("/v1/deployments"), scoped("/v1/replicas")], refresh);
}

/** The api-servers' latest load report: "3 in flight, 2 queued", or "idle". */
function loadText(load) {
  if (!load) return "idle";
  return `${load.in_flight} in flight, ${load.queued} queued${load.cold ? " (a call found no ready instance)" : ""}`;
}

function instancesOf(deployment, replicas) {
  const prefix = `deploy.${deployment.model_name}.`;
  return replicas.filter((r) => at(r, "spec.owner.kind") === "deployments" || at(r, "metadata.name").startsWith(prefix))
    .filter((r) => at(r, "metadata.name").startsWith(prefix));
}

/** What the instances are doing, in a few words: "1 pulling image (3/7 layers), 1 pending". */
function loading(instances) {
  if (!instances.length) return "-";
  const counts = new Map();
  for (const r of instances) {
    const phase = at(r, "status.phase") || "pending";
    const reason = at(r, "status.reason");
    const ready = at(r, "status.ready");
    const word = phase === "running" ? (ready === false ? "loading weights" : "ready") : reason ? `${phase} (${reason})` : phase;
    counts.set(word, (counts.get(word) || 0) + 1);
  }
  return [...counts].map(([word, n]) => `${n} ${word}`).join(", ");
}

/** The deployment body from the form's fields: exactly the reference's fields. */
function bodyOf(form) {
  const number = (name) => {
    const text = form.elements[name].value.trim();
    return text === "" ? undefined : Number(text);
  };
  const body = {
    model_name: form.elements.model_name.value.trim(),
    gpu: form.elements.gpu.value.trim(),
    num_gpus: number("num_gpus"),
    max_batch_size: number("max_batch_size"),
    hf: { repo: form.elements.hf_repo.value.trim() },
    settings: { min_instances: number("min_instances"), max_instances: number("max_instances") },
  };
  const revision = form.elements.hf_revision.value.trim();
  if (revision) body.hf.revision = revision;
  return body;
}

/** The form's field for a finding's path (`deployment.num_gpus`, `settings.max_instances`, `hf.repo`). */
function fieldFor(path) {
  const p = (path || "").replace(/^deployment\./, "");
  if (p.startsWith("hf.revision")) return "hf_revision";
  if (p.startsWith("hf")) return "hf_repo";
  if (p.startsWith("settings.")) return p.slice("settings.".length).split(/[.[]/)[0];
  return p.split(/[.[]/)[0];
}

function showFindings(form, findings) {
  for (const message of form.querySelectorAll(".field-error")) message.replaceChildren();
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  const general = [];
  for (const finding of findings) {
    if (finding.severity && finding.severity !== "error") continue;
    const name = fieldFor(finding.path);
    const input = form.elements[name];
    const slot = form.querySelector(`#error-${name}`);
    if (input && slot) {
      input.setAttribute("aria-invalid", "true");
      slot.append(h("span", {}, finding.message));
    } else {
      general.push(finding.message);
    }
  }
  const box = form.querySelector("#form-errors");
  box.replaceChildren(...general.map((text) => h("li", {}, text)));
}

function field(label, name, attributes = {}, hint) {
  const id = `field-${name}`;
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    h("input", { id, name, "aria-describedby": `error-${name}${hint ? ` hint-${name}` : ""}`, autocomplete: "off", ...attributes }),
    hint ? h("small", { id: `hint-${name}` }, hint) : null,
    h("span", { class: "field-error", id: `error-${name}`, "aria-live": "polite" }));
}

/** `#/deployments/new`: the create form, checked by the api-server's dry run as you type. */
export async function create(context) {
  const { container } = context;
  container.append(heading("Create a deployment"));
  if (needsTenant(context)) return;
  if (session.role === "admin") container.append(notice("info", `Creating for tenant ${currentTenant()} (the tenant filter).`));
  const verdict = h("p", { id: "validation", role: "status", class: "verdict" });
  const form = h("form", { id: "create-deployment", novalidate: true },
    field("Model name", "model_name", { required: true, placeholder: "test-model" }, "1–64 letters, digits, '.', '_' or '-'; it is called owner/model_name."),
    field("GPU type", "gpu", { required: true, list: "gpu-types", value: "A100-80GB" }),
    h("datalist", { id: "gpu-types" }, GPU_TYPES.map((g) => h("option", { value: g }))),
    field("Number of GPUs", "num_gpus", { type: "number", min: "1", max: "8", value: "1", required: true }),
    field("Max batch size", "max_batch_size", { type: "number", min: "1", value: "32", required: true }, "Requests one instance serves at once."),
    field("Weights repository (Hugging Face)", "hf_repo", { required: true, placeholder: "meta-llama/Llama-2-7b-chat-hf" }),
    field("Revision (optional)", "hf_revision", { placeholder: "main" }),
    field("Min instances", "min_instances", { type: "number", min: "0", value: "0", required: true }, "0 scales to zero when idle."),
    field("Max instances", "max_instances", { type: "number", min: "1", value: "1", required: true }),
    h("ul", { id: "form-errors", class: "errors", "aria-live": "polite" }),
    verdict,
    h("div", { class: "actions" },
      h("button", { type: "submit", id: "create-button" }, "Create deployment"),
      h("a", { href: "#/deployments" }, "Cancel")));
  container.append(form);

  let sequence = 0;
  let timer = null;
  const check = async () => {
    const mine = ++sequence;
    try {
      const answer = await call("POST", scoped("/v1/validate"), { body: { deployment: bodyOf(form) }, signal: context.signal });
      if (mine !== sequence) return;
      showFindings(form, answer.diagnostics || []);
      const errors = (answer.diagnostics || []).filter((d) => d.severity === "error").length;
      verdict.textContent = answer.valid ? "✓ Valid: ready to create." : `${errors} problem${errors === 1 ? "" : "s"} to fix.`;
      verdict.className = "verdict " + (answer.valid ? "good" : "bad");
    } catch (error) {
      if (mine !== sequence || context.signal.aborted) return;
      verdict.textContent = error.message;
      verdict.className = "verdict bad";
    }
  };
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("#create-button");
    button.disabled = true;
    try {
      const created = await call("POST", scoped("/v1/deployments"), { body: bodyOf(form), signal: context.signal });
      context.go(`#/deployments/${encodeURIComponent(created.deploy_id)}`);
    } catch (error) {
      if (error instanceof APIError && error.details.length) showFindings(form, error.details);
      else if (error instanceof APIError && error.field) showFindings(form, [{ path: error.field, message: error.message }]);
      showError(error);
      verdict.textContent = "Not created.";
      verdict.className = "verdict bad";
    } finally {
      button.disabled = false;
    }
  });
  check();
}

function snippets(deployment) {
  const base = `${location.origin}/v1/openai`;
  const curl = [
    `curl -s -H "Authorization: Bearer $GPUPLANE_TOKEN" \\`,
    `  -d '{"model": "${deployment.full_name}", "messages": [{"role": "user", "content": "Hello!"}]}' \\`,
    `  ${base}/chat/completions`,
  ].join("\n");
  const python = [
    "import os",
    "from openai import OpenAI",
    `client = OpenAI(base_url="${base}", api_key=os.environ["GPUPLANE_TOKEN"])`,
    `answer = client.chat.completions.create(model="${deployment.full_name}", messages=[{"role": "user", "content": "Hello!"}])`,
    "print(answer.choices[0].message.content)",
  ].join("\n");
  return { curl, python };
}

/** `#/deployments/{id}`: scaling, instances, events, how to call it, delete. */
export async function details(context, id) {
  const { container } = context;
  const title = heading("Deployment");
  const summary = h("dl", { class: "facts", id: "deployment-facts" });
  const scaling = h("section", { "aria-labelledby": "scaling-title" });
  const instances = h("section", { "aria-labelledby": "instances-title" }, h("h3", { id: "instances-title" }, "Instances"), h("div", { id: "instances" }));
  const eventList = h("section", { "aria-labelledby": "events-title" }, h("h3", { id: "events-title" }, "Events"), h("div", { id: "deployment-events" }));
  const usageBox = h("section", { "aria-labelledby": "use-title" });
  const danger = h("section", { "aria-labelledby": "delete-title", class: "danger" });
  container.append(title, summary, scaling, usageBox, instances, eventList, danger);

  let deployment = await get(scoped(`/v1/deployments/${encodeURIComponent(id)}`), { signal: context.signal });
  title.textContent = deployment.full_name;

  // Scaling: min and max instances at run time (PUT, compare-and-swap on resourceVersion).
  const minInput = h("input", { id: "min-instances", type: "number", min: "0", value: String(deployment.settings.min_instances) });
  const maxInput = h("input", { id: "max-instances", type: "number", min: "1", value: String(deployment.settings.max_instances) });
  const scaleResult = h("p", { id: "scale-result", role: "status" });
  const scaleForm = h("form", { id: "scale-form", class: "inline-form" },
    h("div", { class: "field" }, h("label", { for: "min-instances" }, "Min instances"), minInput),
    h("div", { class: "field" }, h("label", { for: "max-instances" }, "Max instances"), maxInput),
    h("button", { type: "submit", id: "scale-button" }, "Save scaling"), scaleResult);
  scaleForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    scaleResult.textContent = "Saving…";
    try {
      deployment = await call("PUT", scoped(`/v1/deployments/${encodeURIComponent(deployment.deploy_id)}`), {
        body: { settings: { min_instances: Number(minInput.value), max_instances: Number(maxInput.value) } },
        headers: { "If-Match": deployment.resourceVersion },
        signal: context.signal,
      });
      scaleResult.textContent = `Saved: ${deployment.settings.min_instances}–${deployment.settings.max_instances} instances.`;
      scaleResult.className = "good";
      await refresh();
    } catch (error) {
      scaleResult.textContent = error.status === 409 ? "Someone changed this deployment meanwhile: the page now shows the latest; try again." : error.message;
      scaleResult.className = "bad";
      if (error.status === 409) await refresh();
    }
  });
  scaling.append(h("h3", { id: "scaling-title" }, "Scaling"), scaleForm);

  const { curl, python } = snippets(deployment);
  usageBox.append(h("h3", { id: "use-title" }, "Use it"),
    copyable("model name", deployment.full_name, { id: "full-name" }),
    copyable("curl", curl, { multiline: true, id: "curl-snippet" }),
    copyable("Python", python, { multiline: true, id: "python-snippet" }),
    h("p", { class: "hint" }, "Set GPUPLANE_TOKEN to a token of this tenant. A deployment at zero instances answers 503 and starts one: retry after Retry-After."));

  const confirmBox = h("div", { id: "delete-confirm", hidden: true },
    h("p", {}, `Delete ${deployment.full_name} and stop all its instances? This cannot be undone.`),
    h("button", { type: "button", class: "destructive", id: "delete-confirm-button", onclick: async () => {
      try {
        await call("DELETE", scoped(`/v1/deployments/${encodeURIComponent(deployment.deploy_id)}`), { signal: context.signal });
        context.go("#/deployments");
      } catch (error) { showError(error); }
    } }, "Yes, delete it"),
    h("button", { type: "button", onclick: () => { confirmBox.hidden = true; deleteButton.focus(); } }, "Keep it"));
  const deleteButton = h("button", { type: "button", class: "destructive", id: "delete-button", onclick: () => {
    confirmBox.hidden = false;
    confirmBox.querySelector("#delete-confirm-button").focus();
  } }, "Delete deployment…");
  danger.append(h("h3", { id: "delete-title" }, "Delete"), deleteButton, confirmBox);

  async function refresh() {
    const [fresh, replicas, answer] = await Promise.all([
      get(scoped(`/v1/deployments/${encodeURIComponent(id)}`), { signal: context.signal }),
      context.list(scoped("/v1/replicas")),
      context.list(scoped("/v1/events")),
    ]);
    deployment = fresh;
    const facts = [
      ["Full name", deployment.full_name], ["Deploy id", deployment.deploy_id], ["GPUs", `${deployment.num_gpus} × ${deployment.gpu}`],
      ["Max batch size", deployment.max_batch_size], ["Weights", deployment.hf.repo + (deployment.hf.revision ? `@${deployment.hf.revision}` : "")],
      ["Weights size", deployment.weights_gb ? `${deployment.weights_gb} GB` : null],
      ["Scaling", `${deployment.settings.min_instances}–${deployment.settings.max_instances} instances`],
      ["Instances", `${deployment.status.instances_running}/${deployment.status.instances_wanted} running`],
      ["State", deployment.status.state], ["Why the rest wait", deployment.status.message], ["Load", loadText(deployment.load)],
      ["Created", when(deployment.created)],
    ];
    summary.replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { fact: k } }, show(v))]));
    if (document.activeElement !== minInput) minInput.value = String(deployment.settings.min_instances);
    if (document.activeElement !== maxInput) maxInput.value = String(deployment.settings.max_instances);
    const mine = instancesOf(deployment, replicas.items || []);
    container.querySelector("#instances").replaceChildren(table("Instances", [
      ["Instance", (r) => at(r, "metadata.name")],
      ["Node", (r) => at(r, "binding.node")],
      ["GPUs", (r) => at(r, "binding.gpuIndices")],
      ["Phase", (r) => at(r, "status.phase"), (r) => (at(r, "status.phase") === "running" ? "good" : at(r, "status.phase") === "failed" ? "bad" : "warn")],
      ["Ready", (r) => (at(r, "status.ready") ? "yes" : "no")],
      ["Progress", (r) => [at(r, "status.reason"), at(r, "status.message")].filter(Boolean).join(": ")],
      ["Restarts", (r) => at(r, "status.restarts")],
    ], mine, { empty: "No instances: min instances is 0 and nothing called it lately." }));
    const prefix = `deploy.${deployment.model_name}.`;
    const related = (answer.items || []).filter((e) => {
      const kind = at(e, "spec.involved.kind");
      const name = at(e, "spec.involved.name") || "";
      return (kind === "deployments" && name === deployment.model_name) || (kind === "replicas" && name.startsWith(prefix));
    });
    container.querySelector("#deployment-events").replaceChildren(eventsTable(related));
  }
  await refresh();
  context.follow([scoped("/v1/replicas"), scoped("/v1/events")], refresh);
}

/** Events as a table, newest first. */
export function eventsTable(items, { id = "events-table" } = {}) {
  const sorted = [...items].sort((a, b) => String(at(b, "spec.lastSeen")).localeCompare(String(at(a, "spec.lastSeen"))));
  return table("Events", [
    ["When", (e) => when(at(e, "spec.lastSeen"))],
    ["Type", (e) => at(e, "spec.severity"), (e) => (at(e, "spec.severity") === "Warning" ? "bad" : "")],
    ["Reason", (e) => at(e, "spec.reason")],
    ["Object", (e) => `${at(e, "spec.involved.kind")}/${at(e, "spec.involved.name")}`],
    ["Count", (e) => at(e, "spec.count")],
    ["Message", (e) => at(e, "spec.message")],
  ], sorted, { empty: "No events yet.", id });
}
