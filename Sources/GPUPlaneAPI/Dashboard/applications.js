// Applications: the list, one application's pods and URLs, and the manifest editor that shows
// the api-server's dry run (POST /v1/validate) at each finding's line and column before apply.
import { APIError, call, currentTenant, get, scoped, session } from "./api.js";
import { at, h, notice, show, table, when } from "./dom.js";
import { showError } from "./app.js";
import { eventsTable } from "./deployments.js";

const heading = (text) => h("h2", { tabindex: "-1" }, text);
const MODES = { 1: "1 (dedicated GPU)", 2: "2 (own model server)", 3: "3 (shared model)" };

function needsTenant(context) {
  if (session.role === "admin" && !currentTenant()) {
    context.container.append(notice("warning", "There are no tenants yet."));
    return true;
  }
  return false;
}

/** `#/applications`. */
export async function list(context) {
  const { container } = context;
  container.append(heading(session.role === "admin" ? `Applications of ${currentTenant() || "…"}` : "Applications"));
  if (needsTenant(context)) return;
  container.append(h("p", {}, h("a", { href: "#/applications/apply", class: "button", id: "apply-link" }, "Apply a manifest")));
  const body = h("div", { id: "application-list" });
  container.append(body);
  const refresh = async () => {
    const answer = await context.list(scoped("/v1/applications"));
    const items = (answer.items || []).sort((a, b) => at(a, "metadata.name").localeCompare(at(b, "metadata.name")));
    body.replaceChildren(table("Applications", [
      ["Name", (a) => h("a", { href: `#/applications/${encodeURIComponent(at(a, "metadata.name"))}` }, at(a, "metadata.name"))],
      ["Pods", (a) => `${at(a, "status.podsRunning")}/${at(a, "status.podsWanted")} running`, (a) => (at(a, "status.podsRunning") === at(a, "status.podsWanted") ? "good" : "warn")],
      ["URL", (a) => (at(a, "status.url") && (at(a, "status.routes") || []).length ? h("a", { href: at(a, "status.url") }, at(a, "status.url")) : "-")],
      ["Why pods wait", (a) => at(a, "status.message")],
      ["Created", (a) => when(at(a, "metadata.created"))],
    ], items, { empty: "No applications yet: apply a manifest.", id: "applications-table" }));
  };
  await refresh();
  context.follow([scoped("/v1/applications"), scoped("/v1/replicas")], refresh);
}

/** `#/applications/{name}`: pods (mode, placement, endpoint, injected inference URL), URLs, events. */
export async function details(context, name) {
  const { container } = context;
  container.append(heading(name));
  const facts = h("dl", { class: "facts" });
  const pods = h("div", { id: "pods" });
  const events = h("div", { id: "application-events" });
  const danger = h("section", { class: "danger", "aria-labelledby": "delete-title" });
  container.append(facts, h("h3", {}, "Pods"), pods, h("h3", {}, "Events"), events, danger);
  const tenant = currentTenant();
  const refresh = async () => {
    const [app, replicas, answer] = await Promise.all([
      get(scoped(`/v1/applications/${encodeURIComponent(name)}`), { signal: context.signal }),
      context.list(scoped("/v1/replicas")),
      context.list(scoped("/v1/events")),
    ]);
    facts.replaceChildren(
      h("dt", {}, "Pods running"), h("dd", {}, `${at(app, "status.podsRunning")}/${at(app, "status.podsWanted")}`),
      h("dt", {}, "Why pods wait"), h("dd", {}, show(at(app, "status.message"))),
      h("dt", {}, "URL"), h("dd", {}, at(app, "status.url") && (at(app, "status.routes") || []).length ? h("a", { href: at(app, "status.url") }, at(app, "status.url")) : "- (no pod has a path)"),
      h("dt", {}, "Created"), h("dd", {}, when(at(app, "metadata.created"))),
      h("dt", {}, "Version"), h("dd", {}, show(at(app, "metadata.resourceVersion"))));
    const routes = new Map((at(app, "status.routes") || []).map((r) => [r.pod, r]));
    const prefix = `${name}.`;
    const mine = new Map((replicas.items || []).filter((r) => at(r, "metadata.name").startsWith(prefix)).map((r) => [at(r, "metadata.name").slice(prefix.length), r]));
    pods.replaceChildren(table("Pods", [
      ["Pod", (p) => p.name],
      ["Image", (p) => p.image],
      ["Mode", (p) => { const r = mine.get(p.name); const mode = r && at(r, "spec.mode"); return mode ? MODES[mode] || mode : "CPU"; }],
      ["Model", (p) => at(p, "gpu.model")],
      ["Placement", (p) => { const r = mine.get(p.name); if (!r || !r.binding) return "not placed";
        const gpus = r.binding.gpuIndices || [];
        return gpus.length ? `${r.binding.node}, GPU ${gpus.join(", ")}` : r.binding.node; }],
      ["Phase", (p) => at(mine.get(p.name), "status.phase"), (p) => (at(mine.get(p.name), "status.phase") === "running" ? "good" : "warn")],
      ["Message", (p) => at(mine.get(p.name), "status.message")],
      ["Endpoint", (p) => at(mine.get(p.name), "status.endpoint")],
      ["Inference URL (injected)", (p) => {
        const r = mine.get(p.name);
        const key = r && at(r, "spec.inferenceKey");
        const slug = r && at(r, "spec.modelSlug");
        return key && slug ? `${location.origin}/v1/inference/${tenant}/${slug}/${key}/v1` : "-";
      }],
      ["URL", (p) => { const route = routes.get(p.name); return route ? h("a", { href: route.url }, `${route.url}${route.ready ? "" : " (not ready)"}`) : "-"; }],
    ], at(app, "spec.pods") || [], { id: "pods-table" }));
    const related = (answer.items || []).filter((e) => {
      const kind = at(e, "spec.involved.kind");
      const involved = at(e, "spec.involved.name") || "";
      return (kind === "applications" && involved === name) || (kind === "replicas" && involved.startsWith(prefix));
    });
    events.replaceChildren(eventsTable(related));
  };
  await refresh();
  const confirmBox = h("div", { hidden: true, id: "delete-confirm" },
    h("p", {}, `Delete ${name} and stop all its pods?`),
    h("button", { type: "button", class: "destructive", id: "delete-confirm-button", onclick: async () => {
      try {
        await call("DELETE", scoped(`/v1/applications/${encodeURIComponent(name)}`), { signal: context.signal });
        context.go("#/applications");
      } catch (error) { showError(error); }
    } }, "Yes, delete it"),
    h("button", { type: "button", onclick: () => { confirmBox.hidden = true; } }, "Keep it"));
  danger.append(h("h3", { id: "delete-title" }, "Delete"),
    h("button", { type: "button", class: "destructive", id: "delete-button", onclick: () => { confirmBox.hidden = false; confirmBox.querySelector("button").focus(); } }, "Delete application…"),
    confirmBox);
  context.follow([scoped("/v1/applications"), scoped("/v1/replicas"), scoped("/v1/events")], refresh);
}

const EXAMPLE = `application:
  name: hello
  pods:
    - name: web
      image: docker.io/library/nginx:1.27
      path: /
      servicePorts: [80]
`;

/** `#/applications/apply`: paste or upload a manifest; the dry run's findings at line:column; apply. */
export async function editor(context) {
  const { container } = context;
  container.append(heading("Apply a manifest"));
  if (needsTenant(context)) return;
  if (session.role === "admin") container.append(notice("info", `Applying for tenant ${currentTenant()} (the tenant filter).`));
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true", id: "gutter" });
  const text = h("textarea", { id: "manifest", class: "code", spellcheck: "false", rows: "18", "aria-describedby": "findings-title", wrap: "off" });
  text.value = sessionStorage.getItem("gpuplane-draft") || EXAMPLE;
  const upload = h("input", { type: "file", id: "manifest-file", accept: ".yaml,.yml,.json,text/yaml,application/json" });
  const findings = h("ol", { id: "findings", class: "findings" });
  const verdict = h("p", { id: "dry-run-verdict", role: "status", class: "verdict" });
  const result = h("div", { id: "apply-result", "aria-live": "polite" });
  const applyButton = h("button", { type: "button", id: "apply-button" }, "Apply");
  const checkButton = h("button", { type: "button", id: "check-button" }, "Check (dry run)");
  container.append(
    h("div", { class: "field" }, h("label", { for: "manifest-file" }, "Upload a manifest file"), upload),
    h("label", { for: "manifest" }, "Manifest (YAML or JSON)"),
    h("div", { class: "editor" }, gutter, text),
    h("div", { class: "actions" }, checkButton, applyButton),
    verdict,
    h("h3", { id: "findings-title" }, "Dry-run findings"), findings, result);

  let marked = new Map();
  const paintGutter = () => {
    const count = text.value.split("\n").length;
    const lines = [];
    for (let i = 1; i <= count; i++) lines.push(h("span", { class: marked.has(i) ? `mark ${marked.get(i)}` : undefined }, `${i}\n`));
    gutter.replaceChildren(...lines);
    gutter.scrollTop = text.scrollTop;
  };
  text.addEventListener("scroll", () => { gutter.scrollTop = text.scrollTop; });

  const goTo = (line, column) => {
    const rows = text.value.split("\n");
    let offset = 0;
    for (let i = 0; i < line - 1 && i < rows.length; i++) offset += rows[i].length + 1;
    offset += Math.max(0, (column || 1) - 1);
    text.focus();
    text.setSelectionRange(offset, offset);
  };

  const showDiagnostics = (diagnostics) => {
    marked = new Map();
    findings.replaceChildren(...diagnostics.map((d) => {
      if (d.line) marked.set(d.line, d.severity === "error" ? "error" : "warning");
      const where = d.line ? `line ${d.line}, column ${d.column || 1}` : "manifest";
      return h("li", { class: d.severity === "error" ? "bad" : "warn" },
        d.line ? h("button", { type: "button", class: "link", onclick: () => goTo(d.line, d.column) }, `${where}:`) : `${where}:`,
        ` ${d.severity || "error"}: ${d.message}`, d.path ? h("code", {}, ` (${d.path})`) : null);
    }));
    if (!diagnostics.length) findings.append(h("li", { class: "good" }, "No findings."));
    paintGutter();
  };

  let sequence = 0;
  const check = async () => {
    const mine = ++sequence;
    sessionStorage.setItem("gpuplane-draft", text.value);
    if (!text.value.trim()) { showDiagnostics([]); verdict.textContent = "Paste or upload a manifest."; return false; }
    try {
      const answer = await call("POST", scoped("/v1/validate") + (scoped("/v1/validate").includes("?") ? "&" : "?") + "file=manifest", { body: text.value, signal: context.signal });
      if (mine !== sequence) return false;
      showDiagnostics(answer.diagnostics || []);
      const errors = (answer.diagnostics || []).filter((d) => d.severity === "error").length;
      verdict.textContent = answer.valid ? "✓ The dry run found nothing wrong: ready to apply." : `✗ ${errors} error${errors === 1 ? "" : "s"}: fix them before applying.`;
      verdict.className = "verdict " + (answer.valid ? "good" : "bad");
      return answer.valid;
    } catch (error) {
      if (mine !== sequence) return false;
      verdict.textContent = error.message;
      verdict.className = "verdict bad";
      return false;
    }
  };
  let timer = null;
  text.addEventListener("input", () => { paintGutter(); clearTimeout(timer); timer = setTimeout(check, 400); });
  checkButton.addEventListener("click", check);
  upload.addEventListener("change", async () => {
    const file = upload.files && upload.files[0];
    if (!file) return;
    text.value = await file.text();
    paintGutter();
    check();
  });
  applyButton.addEventListener("click", async () => {
    result.replaceChildren();
    if (!(await check())) { text.focus(); return; }
    applyButton.disabled = true;
    try {
      const applied = await call("POST", scoped("/v1/applications"), { body: text.value, signal: context.signal });
      const appName = at(applied, "metadata.name");
      result.replaceChildren(notice("info", `Applied ${appName} (version ${at(applied, "metadata.resourceVersion")}).`),
        h("p", {}, h("a", { href: `#/applications/${encodeURIComponent(appName)}`, id: "applied-link" }, `Open ${appName}`)));
    } catch (error) {
      if (error instanceof APIError && error.details.length) showDiagnostics(error.details);
      result.replaceChildren(notice("error", error.message));
    } finally {
      applyButton.disabled = false;
    }
  });
  paintGutter();
  check();
}
