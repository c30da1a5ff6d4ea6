// gpuplane's dashboard: sign-in, the page router, the admin's tenant filter and live updates.
// Pages are addressed by the URL's fragment (#/deployments/…), which never leaves the browser;
// the token stays in sessionStorage.
import { APIError, chooseTenant, chosenTenant, forgetToken, get, session, setToken, signIn, token, watch } from "./api.js";
import { h, notice } from "./dom.js";
import * as deployments from "./deployments.js";
import * as applications from "./applications.js";
import * as fleet from "./fleet.js";
import * as usage from "./usage.js";
import * as events from "./events.js";

const ROUTES = [
  [/^#\/deployments\/new$/, deployments.create, "deployments"],
  [/^#\/deployments\/([^/]+)$/, deployments.details, "deployments"],
  [/^#\/deployments$/, deployments.list, "deployments"],
  [/^#\/applications\/apply$/, applications.editor, "applications"],
  [/^#\/applications\/([^/]+)$/, applications.details, "applications"],
  [/^#\/applications$/, applications.list, "applications"],
  [/^#\/fleet$/, fleet.page, "fleet"],
  [/^#\/usage$/, usage.page, "usage"],
  [/^#\/events$/, events.page, "events"],
];

const $ = (id) => document.getElementById(id);
let current = null; // the page shown: its AbortController ends its calls and watches

/** Shows why something failed, in words for a person, at the top of the page. */
export function showError(error) {
  const banner = $("banner");
  banner.replaceChildren();
  if (!error) return;
  if (error.name === "AbortError") return;
  let text = error.message || String(error);
  if (error instanceof APIError && error.status === 403 && session.role === "user" && /plan/i.test(text)) {
    text = `Refused by your plan (${session.plan}): ${text}`;
  }
  banner.append(notice("error", text));
}

function setLive(state) {
  const live = $("live");
  live.className = "live " + (state === "live" ? "on" : state === "off" ? "" : "waiting");
  live.textContent = state === "live" ? "● Live: updates arrive as they happen" : state === "off" ? "" : "○ Reconnecting to live updates…";
}

/**
 * The context a page renders with: where to draw, a signal that ends when the user leaves,
 * `list(path)` (a list call that remembers the resourceVersion to watch from), and
 * `follow(paths, refresh)`: watch each path and call `refresh` (debounced) on any change.
 */
function makeContext(container, controller) {
  const versions = new Map();
  const context = {
    container,
    signal: controller.signal,
    async list(path) {
      const answer = await get(path, { signal: controller.signal });
      if (answer && answer.resourceVersion) versions.set(path, answer.resourceVersion);
      return answer;
    },
    follow(paths, refresh, signal = controller.signal) {
      let timer = null;
      const again = () => {
        clearTimeout(timer);
        timer = setTimeout(() => refresh().catch(showError), 150);
      };
      const states = new Map();
      let failed = false; // a stream's failure is on the banner: clear it once all are back
      for (const path of paths) {
        states.set(path, "reconnecting");
        watch(path, versions.get(path), {
          signal,
          onChange: again,
          onState: (state) => {
            if (state instanceof APIError) { showError(state); failed = true; state = "reconnecting"; }
            states.set(path, state);
            const live = [...states.values()].every((s) => s === "live");
            if (live && failed) { failed = false; showError(null); refresh().catch(showError); }
            setLive(live ? "live" : "reconnecting");
          },
        });
      }
    },
    go(hash) { location.hash = hash; },
  };
  return context;
}

async function route() {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  setLive("off");
  const view = $("view");
  if (!token() || !session.role) {
    // Signed out: the banner keeps saying why (a revoked token), whatever page is asked for.
    view.replaceChildren(h("p", {}, "Sign in with a gpuplane token (admin or user) to see and manage your deployments, applications and usage. The token stays in this browser tab (sessionStorage) and is sent only to this api-server."));
    return;
  }
  showError(null);
  if (session.role === "admin") $("tenant-filter").value = chosenTenant();
  const hash = location.hash.startsWith("#/") ? location.hash : "#/deployments";
  let match = null;
  let page = null;
  let section = "";
  for (const [pattern, render, name] of ROUTES) {
    match = hash.match(pattern);
    if (match) { page = render; section = name; break; }
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const container = h("div", { class: "page" });
  view.replaceChildren(container);
  if (!page) {
    container.append(notice("warning", `No page ${hash}.`));
    return;
  }
  if (section === "fleet" && session.role !== "admin") {
    container.append(notice("warning", "The fleet page needs an admin token."));
    return;
  }
  try {
    await page(makeContext(container, controller), ...match.slice(1).map(decodeURIComponent));
    const heading = container.querySelector("h2");
    if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
  } catch (error) {
    if (!controller.signal.aborted) showError(error);
  }
}

function showAccount() {
  const signedIn = Boolean(token() && session.role);
  $("login").hidden = signedIn;
  $("account").hidden = !signedIn;
  $("fleet-link").hidden = session.role !== "admin";
  if (!signedIn) return;
  $("who").textContent = session.role === "admin" ? "admin" : `${session.tenant} (${session.plan} plan)`;
  const filter = $("tenant-filter");
  $("tenant-choice").hidden = session.role !== "admin";
  filter.replaceChildren(...session.tenants.map((name) => h("option", { value: name }, name)));
  if (!session.tenants.length) filter.append(h("option", { value: "" }, "no tenants yet"));
  filter.value = chosenTenant();
}

async function start() {
  if (!token()) { showAccount(); return route(); }
  try {
    await signIn();
  } catch (error) {
    if (error.status === 401) forgetToken();
    session.role = null;
    showAccount();
    await route();
    showError(error);
    return;
  }
  showAccount();
  await route();
}

// The button is disabled in the page until this handler exists: a sign-in before the script
// had loaded submitted the form to the page itself, a reload that lost the token silently.
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = $("token");
  const value = field.value.trim();
  if (!value) { showError(new Error("Paste a token (gp_…) first.")); return; }
  setToken(value);
  field.value = "";
  start();
});
$("sign-out").addEventListener("click", () => {
  forgetToken();
  session.role = null;
  showError(null);
  showAccount();
  route();
  $("token").focus();
});
$("tenant-filter").addEventListener("change", (event) => {
  chooseTenant(event.target.value);
  route();
});
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/")) route(); // "#main" is the skip link, not a page
});
$("sign-in").disabled = false;
window.addEventListener("gpuplane-unauthorized", () => {
  // An expired or revoked token: back to the sign-in form, saying why.
  forgetToken();
  session.role = null;
  showAccount();
  if (current) current.abort();
  setLive("off");
  $("view").replaceChildren();
  showError(new Error("Your token is unknown, revoked or expired: sign in again with a valid token."));
});
start();
