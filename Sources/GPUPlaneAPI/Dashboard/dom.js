// Small helpers to build the page. Every value is written as text (textContent, attributes),
// never parsed as HTML.

/** An element: `h("a", {href: "#/x", class: "y", onclick: f}, "text", child, …)`. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An SVG element with attributes. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) element.setAttribute(key, String(value));
  }
  append(element, children);
  return element;
}

/** A value for a table cell: "-" when absent. */
export function show(value) {
  if (value === undefined || value === null || value === "") return "-";
  if (Array.isArray(value)) return value.length ? value.join(", ") : "-";
  return String(value);
}

/** `object.a.b.c` without failing on a missing link. */
export const at = (object, path) => path.split(".").reduce((value, key) => (value == null ? undefined : value[key]), object);

/**
 * A table with a caption: `columns` are `[header, value(item), class(item)?]`; a value may be
 * a node (a link, a button). `empty` is said when there are no items.
 */
export function table(caption, columns, items, { empty = "None yet.", id } = {}) {
  if (!items.length) return h("p", { class: "empty", id }, empty);
  const head = h("tr", {}, columns.map(([header]) => h("th", { scope: "col" }, header)));
  const rows = items.map((item) => h("tr", {}, columns.map(([, value, classOf]) => {
    const content = value(item);
    return h("td", { class: classOf ? classOf(item) : undefined }, content instanceof Node ? content : show(content));
  })));
  return h("div", { class: "table-wrap" }, h("table", { id }, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, rows)));
}

/** A read-only text with a Copy button that puts it on the clipboard. */
export function copyable(label, text, { multiline = false, id } = {}) {
  const field = multiline
    ? h("textarea", { readonly: true, rows: String(text.split("\n").length + 1), id, "aria-label": label, spellcheck: "false", wrap: "off" })
    : h("input", { readonly: true, value: text, id, "aria-label": label, spellcheck: "false" });
  field.value = text;
  const done = h("span", { class: "copied", role: "status" });
  const button = h("button", {
    type: "button",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
      } catch (_) {
        field.select(); // no clipboard API (plain http to another host): select it for Ctrl+C
        document.execCommand("copy");
      }
      done.textContent = "Copied";
      setTimeout(() => { done.textContent = ""; }, 2000);
    },
  }, `Copy ${label}`);
  return h("div", { class: "copyable" }, h("span", { class: "copy-label" }, label), field, button, done);
}

/** A message box: kind is "error", "warning" or "info". */
export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** Local date and time of an ISO timestamp. */
export function when(iso) {
  if (!iso) return "-";
  const date = new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleString();
}
