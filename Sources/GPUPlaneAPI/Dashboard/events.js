// Events for any object: the tenant's (or, for an admin, the cluster's: nodes, GPUs, model
// servers), filtered by kind and name, live.
import { currentTenant, session } from "./api.js";
import { h, notice } from "./dom.js";
import { eventsTable } from "./deployments.js";

const KINDS = ["", "applications", "deployments", "replicas", "nodes", "modelservers"];

/** `#/events`. */
export async function page(context) {
  const { container } = context;
  container.append(h("h2", { tabindex: "-1" }, "Events"));
  const kind = h("select", { id: "event-kind" }, KINDS.map((k) => h("option", { value: k }, k || "any kind")));
  const name = h("input", { id: "event-name", placeholder: "any name", autocomplete: "off" });
  const cluster = h("input", { type: "checkbox", id: "event-cluster" });
  const filters = h("form", { class: "inline-form", id: "event-filters" },
    h("div", { class: "field" }, h("label", { for: "event-kind" }, "Kind"), kind),
    h("div", { class: "field" }, h("label", { for: "event-name" }, "Name"), name),
    session.role === "admin" ? h("div", { class: "field checkbox" }, cluster, h("label", { for: "event-cluster" }, "Cluster events (nodes, GPUs, model servers) instead of the tenant's")) : null);
  const body = h("div", { id: "event-list" });
  container.append(filters, body);
  if (session.role === "admin" && !currentTenant()) container.append(notice("info", "No tenants yet: only cluster events."));
  const path = () => {
    const query = new URLSearchParams();
    if (session.role === "admin") query.set("tenant", cluster.checked || !currentTenant() ? "_cluster" : currentTenant());
    if (kind.value) query.set("kind", kind.value);
    if (name.value.trim()) query.set("name", name.value.trim());
    const q = query.toString();
    return "/v1/events" + (q ? `?${q}` : "");
  };
  let inner = null;
  const restart = async () => {
    if (inner) inner.abort();
    inner = new AbortController();
    context.signal.addEventListener("abort", () => inner.abort());
    const current = path();
    const refresh = async () => {
      const answer = await context.list(current);
      body.replaceChildren(eventsTable(answer.items || []));
    };
    await refresh();
    context.follow([current], refresh, inner.signal);
  };
  filters.addEventListener("change", () => restart().catch((e) => body.replaceChildren(notice("error", e.message))));
  filters.addEventListener("submit", (event) => { event.preventDefault(); restart(); });
  await restart();
}
