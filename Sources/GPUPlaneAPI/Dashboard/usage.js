// Usage this month: credits per day (an inline SVG chart drawn here), included hours left per
// mode, and the spending limit.
import { currentTenant, get, scoped, session } from "./api.js";
import { h, notice, svg } from "./dom.js";

const MODE_NAMES = { 1: "Mode 1 (dedicated GPUs)", 2: "Mode 2 (own model server)", 3: "Mode 3 (shared models)" };

/** Credits per UTC day of the month so far: `[{day: "2026-12-01", credits}]`. */
export function creditsPerDay(usage, now = new Date()) {
  const start = new Date(usage.monthStart);
  const days = [];
  for (let d = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate())); d <= now; d = new Date(d.getTime() + 86400000)) {
    days.push({ day: d.toISOString().slice(0, 10), credits: 0 });
  }
  const index = new Map(days.map((d, i) => [d.day, i]));
  for (const record of usage.records || []) {
    const day = String(record.spec.intervalStart).slice(0, 10);
    const i = index.get(day);
    if (i !== undefined) days[i].credits += (record.spec.costMicroDollars || 0) / 1000; // 1 credit = 1,000 micro-dollars
  }
  return days;
}

/** A bar chart of `days` as an SVG element, with a text alternative. */
export function chart(days) {
  const width = 720, height = 220, left = 48, bottom = 28, top = 12;
  const max = Math.max(1, ...days.map((d) => d.credits));
  const step = (width - left - 8) / Math.max(days.length, 1);
  const y = (value) => top + (height - top - bottom) * (1 - value / max);
  const total = days.reduce((sum, d) => sum + d.credits, 0);
  const figure = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title chart-desc", class: "chart", id: "credits-chart" },
    svg("title", { id: "chart-title" }, "Credits per day this month"),
    svg("desc", { id: "chart-desc" }, `${total.toFixed(1)} credits in ${days.length} days; most in one day ${max === 1 && total === 0 ? 0 : max.toFixed(1)}.`));
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    figure.append(svg("line", { x1: left, x2: width - 4, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis" }, value >= 10 ? value.toFixed(0) : value.toFixed(1)));
  }
  days.forEach((d, i) => {
    const x = left + i * step + step * 0.15;
    const barHeight = height - bottom - y(d.credits);
    figure.append(svg("rect", { x, y: y(d.credits), width: Math.max(step * 0.7, 1), height: Math.max(barHeight, d.credits > 0 ? 1 : 0), class: "bar" },
      svg("title", {}, `${d.day}: ${d.credits.toFixed(2)} credits`)));
    if (days.length <= 16 || i % 5 === 0 || i === days.length - 1) {
      figure.append(svg("text", { x: x + step * 0.35, y: height - 8, "text-anchor": "middle", class: "axis" }, d.day.slice(8)));
    }
  });
  return figure;
}

/** `#/usage`. */
export async function page(context) {
  const { container } = context;
  container.append(h("h2", { tabindex: "-1" }, session.role === "admin" ? `Usage of ${currentTenant() || "…"}` : "Usage this month"));
  if (session.role === "admin" && !currentTenant()) {
    container.append(notice("warning", "There are no tenants yet."));
    return;
  }
  const body = h("div", { id: "usage" });
  const refreshButton = h("button", { type: "button", id: "usage-refresh" }, "Refresh");
  container.append(h("p", { class: "hint" }, "The scheduler meters running replicas every minute. ", refreshButton), body);
  const refresh = async () => {
    const usage = await get(scoped("/v1/usage"), { signal: context.signal });
    const days = creditsPerDay(usage);
    const limit = usage.spendingLimitUSD;
    const spent = usage.costUSD || 0;
    body.replaceChildren(
      h("dl", { class: "facts", id: "usage-facts" },
        h("dt", {}, "Tenant"), h("dd", {}, usage.tenant),
        h("dt", {}, "Plan"), h("dd", {}, usage.plan),
        h("dt", {}, "Since"), h("dd", {}, new Date(usage.monthStart).toLocaleDateString()),
        h("dt", {}, "Credits used"), h("dd", { id: "credits-used" }, `${(usage.credits || 0).toFixed(1)} credits ($${spent.toFixed(2)})`),
        h("dt", {}, "Spending limit"), h("dd", { id: "spending-limit" }, limit == null ? "none set" :
          h("span", {}, h("meter", { min: "0", max: String(limit), value: String(Math.min(spent, limit)), high: String(limit * 0.8), "aria-label": "spent of the spending limit" }),
            ` $${spent.toFixed(2)} of $${limit.toFixed(2)}${spent >= limit ? " — reached: deployments are not scaled up past their minimum" : ""}`))),
      h("figure", {}, chart(days), h("figcaption", {}, "Credits per day (1,000 credits = $1)")),
      h("h3", {}, "Included hours left"),
      h("div", { class: "table-wrap" }, h("table", { id: "usage-modes" }, h("caption", {}, "Per mode"),
        h("thead", {}, h("tr", {}, ["Mode", "Hours used", "Included hours left", "Billable hours", "Cost"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, (usage.modes || []).map((m) => h("tr", {},
          h("td", {}, MODE_NAMES[m.mode] || `Mode ${m.mode}`), h("td", {}, (m.seconds / 3600).toFixed(2)),
          h("td", {}, m.includedHoursLeft.toFixed(2)), h("td", {}, (m.billableSeconds / 3600).toFixed(2)), h("td", {}, `$${m.costUSD.toFixed(2)}`)))))));
  };
  refreshButton.addEventListener("click", () => refresh().catch((e) => body.replaceChildren(notice("error", e.message))));
  await refresh();
}
