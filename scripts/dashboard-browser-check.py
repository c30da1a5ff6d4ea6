#!/usr/bin/env python3
"""Drives gpuplane's dashboard (/ui) in real headless Chromium with Selenium, against a live
cluster that Tests/EndToEndTests/DashboardBrowserTests.swift starts, and takes a screenshot of
each page. Every step waits on what the page shows (never a fixed sleep); the first step that
fails prints why, saves failure.png and the browser's console, and exits 1.

Environment: BASE (the api-server's URL), ADMIN_TOKEN, USER_TOKEN (tenant USER_TENANT),
OTHER_TENANT with OTHER_DEPLOY_ID and OTHER_DEPLOYMENT (its full name) and OTHER_APP, NODE and
NVML_EVENTS (the node's fake-NVML events file), CPU_IMAGE (an image the node has),
SCREENSHOTS (a folder), CHROMIUM and CHROMEDRIVER (paths)."""

import os
import sys
import time
import traceback
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

E = os.environ
BASE = E["BASE"]
SHOTS = E["SCREENSHOTS"]
WAIT = float(E.get("WAIT_SECONDS", "90"))
os.makedirs(SHOTS, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = E.get("CHROMIUM", "/usr/bin/chromium")
for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                 "--force-device-scale-factor=1", "--lang=en-US"]:
    options.add_argument(argument)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(executable_path=E.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
driver.set_page_load_timeout(60)
step_name = "start"


def step(name):
    global step_name
    step_name = name
    print(f"step: {name}", flush=True)


def element(css):
    return driver.find_element(By.CSS_SELECTOR, css)


def wait(what, condition, timeout=WAIT):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition())
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def text_of(css):
    """What the elements matching `css` show now (read in one go: the page redraws as it likes)."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText).join(' ')", css)


def wait_text(css, text, timeout=WAIT):
    wait(f"{css!r} to show {text!r} (it shows {text_of(css)[:300]!r})", lambda: text in text_of(css), timeout)


def click(css):
    """Clicks what matches `css`, again if the page redrew it between finding and clicking."""
    def attempt():
        try:
            element(css).click()
            return True
        except StaleElementReferenceException:
            return False
    wait(f"{css!r} to take a click", attempt)


def fill(css, value):
    field = element(css)
    field.clear()
    field.send_keys(value)


def set_text(css, value):
    """Puts `value` in a textarea as a paste would, and lets the page hear an input event."""
    driver.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", element(css), value)


console = []


def go(fragment):
    """Loads a page of the dashboard and waits for its script to run (it enables the sign-in
    button, present on every page). Other tests on the machine add and remove network
    interfaces (veths, bridges), and Chromium then aborts the requests in flight with
    ERR_NETWORK_CHANGED: a script module lost that way never runs. So a page whose script has
    not run after 30 s is loaded again, up to four loads. (Reloading only when that error was
    in the console missed it: it can reach the console long after the load, or not at all.)
    A page whose script never runs still fails: the caller's next wait times out."""
    for attempt in range(4):
        driver.get(f"{BASE}/ui{fragment}")
        try:
            WebDriverWait(driver, 30, poll_frequency=0.2).until(lambda d: element("#sign-in").is_enabled())
            return
        except TimeoutException:
            entries = driver.get_log("browser")
            console.extend(entries)
            print(f"page script of #{fragment} not run after 30 s (load {attempt + 1} of 4); console: "
                  + "; ".join(entry.get("message", "")[:160] for entry in entries[-5:]), flush=True)


def shot(name):
    driver.execute_script("window.scrollTo(0, 0)")
    path = os.path.join(SHOTS, f"{name}.png")
    # The whole page, not just the window: as tall as what is drawn.
    height = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    width = driver.get_window_size()["width"]
    original = driver.get_window_size()
    driver.set_window_size(width, min(max(height + 100, 600), 4000))
    driver.save_screenshot(path)
    driver.set_window_size(original["width"], original["height"])
    print(f"screenshot: {path}", flush=True)


def sign_in(token, expect):
    """Signs in by keyboard: the token, then Enter (once the page's script is ready for it)."""
    wait("the sign-in form", lambda: element("#login").is_displayed())
    wait("the sign-in button enabled by the page's script", lambda: element("#sign-in").is_enabled())
    fill("#token", token)
    element("#token").send_keys(Keys.ENTER)
    wait_text("#who", expect)


def sign_out():
    element("#sign-out").click()
    wait("the sign-in form", lambda: element("#login").is_displayed())


try:
    step("a wrong token is refused in words")
    go("#/deployments")
    wait("the sign-in form", lambda: element("#token").is_displayed())
    # The token field is labelled, and so is every control reached below.
    assert element("label[for=token]").text == "Token"
    shot("sign-in")
    wait("the sign-in button enabled by the page's script", lambda: element("#sign-in").is_enabled())
    fill("#token", "gp_this_token_does_not_exist_0123456789")
    element("#sign-in").click()
    wait_text("#banner", "unknown, revoked or expired")
    assert element("#login").is_displayed()
    assert "gp_" not in driver.current_url, "the token must never be in a URL"

    step("a token revoked while signed in sends the user back to sign in, saying why")
    sign_in(E["REVOKED_TOKEN"], E["USER_TENANT"])
    wait_text("#live", "Live")
    revoke = urllib.request.Request(f"{BASE}/v1/tokens/{E['REVOKED_TOKEN_ID']}", method="DELETE", headers={"Authorization": f"Bearer {E['ADMIN_TOKEN']}"})
    assert urllib.request.urlopen(revoke, timeout=20).status == 204
    # The api-server forgets a revoked token within 5 s (its token cache); the next call says so.
    moved = [time.monotonic()]

    def refused():
        if element("#login").is_displayed():
            return True
        if time.monotonic() - moved[0] > 1:
            moved[0] = time.monotonic()
            driver.execute_script("location.hash = location.hash === '#/deployments' ? '#/applications' : '#/deployments'")
        return False
    wait("the sign-in form again", refused)
    wait_text("#banner", "unknown, revoked or expired")
    assert driver.execute_script("return sessionStorage.getItem('gpuplane-token')") is None

    step("a user signs in and sees the deployments page, live")
    sign_in(E["USER_TOKEN"], E["USER_TENANT"])
    go("#/deployments")
    wait_text("h2", "Deployments")
    wait_text("#live", "Live")
    assert "gp_" not in driver.current_url
    assert driver.execute_script("return sessionStorage.getItem('gpuplane-token')") == E["USER_TOKEN"]
    assert not driver.execute_script("return localStorage.length")

    step("the create form checks the fields as they are typed")
    element("#new-deployment").click()
    wait("the create form", lambda: element("#create-deployment").is_displayed())
    fill("#field-model_name", "chat-model")
    fill("#field-gpu", "H100-80GB")
    fill("#field-num_gpus", "9")
    fill("#field-hf_repo", "meta-llama/Llama-2-7b-chat-hf")
    fill("#field-min_instances", "0")
    fill("#field-max_instances", "2")
    wait_text("#error-num_gpus", "out of range")
    assert element("#field-num_gpus").get_attribute("aria-invalid") == "true"
    wait_text("#validation", "problem")
    shot("deployment-create-invalid")
    # The tenant's GPU limit (8) refuses 9 instances of 1 GPU, under min instances.
    fill("#field-num_gpus", "1")
    fill("#field-max_instances", "10")
    fill("#field-min_instances", "9")
    wait_text("#error-min_instances", "limit of 8 GPUs")
    fill("#field-min_instances", "0")
    fill("#field-max_instances", "2")
    wait_text("#validation", "Valid")
    assert text_of("#error-num_gpus") == ""
    shot("deployment-create")
    element("#create-button").click()

    step("the new deployment's page")
    full_name = f"{E['USER_TENANT']}/chat-model"
    wait_text("h2", full_name)
    wait_text("#deployment-facts", "0–2 instances")
    assert element("#full-name").get_attribute("value") == full_name
    curl = element("#curl-snippet").get_attribute("value")
    assert f'"model": "{full_name}"' in curl and f"{BASE}/v1/openai/chat/completions" in curl, curl
    assert f'model="{full_name}"' in element("#python-snippet").get_attribute("value")

    step("min and max instances changed at run time; the instance's progress")
    fill("#min-instances", "1")
    fill("#max-instances", "3")
    element("#scale-button").click()
    wait_text("#scale-result", "Saved: 1–3 instances")
    wait_text("#deployment-facts", "1–3 instances")
    # The new instance, live: placed on a node, started, running (the stand-in model server).
    wait_text("#instances", "deploy.chat-model.")
    wait_text("#instances", E["NODE"])
    wait_text("#instances", "running")
    wait_text("#deployment-facts", "1/1 running")
    shot("deployment-details")

    step("the list shows the deployment and its new maximum")
    go("#/deployments")
    wait_text("#deployments-table", full_name)
    wait("the row to say 1–3", lambda: any(full_name in r and "1–3" in r for r in driver.execute_script("return [...document.querySelectorAll('#deployments-table tr')].map((e) => e.innerText)")))
    shot("deployments")

    step("a bad manifest's findings at their line and column, before apply")
    go("#/applications/apply")
    wait("the editor", lambda: element("#manifest").is_displayed())
    bad = "\n".join([
        "application:",
        "  name: web-tool",
        "  pods:",
        "    - name: worker",
        f"      image: {E['CPU_IMAGE']}",
        "      comand: [\"sleep\", \"100000\"]",
        "",
    ])
    set_text("#manifest", bad)
    wait_text("#findings", "line 6, column 7")
    wait_text("#findings", "comand")
    wait_text("#dry-run-verdict", "error")
    assert "error" in element("#gutter").find_elements(By.CSS_SELECTOR, ".mark")[0].get_attribute("class")
    shot("apply-findings")
    # Apply refuses while the dry run has errors: nothing is created.
    element("#apply-button").click()
    wait_text("#dry-run-verdict", "fix them")
    assert text_of("#apply-result") == ""

    step("a good manifest applied, its page")
    set_text("#manifest", bad.replace("comand", "command"))
    wait_text("#dry-run-verdict", "nothing wrong")
    element("#apply-button").click()
    wait_text("#apply-result", "Applied web-tool")
    element("#applied-link").click()
    wait_text("h2", "web-tool")
    wait_text("#pods-table", "worker")
    wait_text("#pods-table", "running", timeout=180)
    shot("application-details")
    go("#/applications")
    wait_text("#applications-table", "web-tool")
    shot("applications")

    step("usage: the chart, included hours, the spending limit")
    go("#/usage")
    wait("the chart", lambda: element("#credits-chart").is_displayed())
    wait_text("#usage-modes", "Mode 1")
    wait_text("#spending-limit", "of $500.00")
    # The scheduler meters the running instance (a Mode 1 GPU, billable on this plan) every
    # minute: Refresh until the day's bar shows it.
    last = [time.monotonic()]

    def metered():
        if "0.0 credits" not in text_of("#credits-used"):
            return True
        if time.monotonic() - last[0] > 3:
            last[0] = time.monotonic()
            click("#usage-refresh")
        return False
    wait("the instance's first metered minute", metered, timeout=max(WAIT, 150))
    wait("a bar for today", lambda: driver.execute_script("return [...document.querySelectorAll('#credits-chart rect.bar')].some((r) => Number(r.getAttribute('height')) > 0)"))
    shot("usage")

    step("events")
    go("#/events")
    wait_text("#event-list", "replicas/web-tool.worker")
    shot("events")

    step("another tenant's objects are refused to a user")
    go(f"#/deployments/{E['OTHER_DEPLOY_ID']}")
    wait_text("#banner", "not found")
    assert E["OTHER_DEPLOYMENT"] not in driver.find_element(By.TAG_NAME, "body").text
    shot("refused")
    go(f"#/applications/{E['OTHER_APP']}")
    wait_text("#banner", "not found")
    go("#/deployments")
    wait_text("#deployments-table", full_name)
    assert E["OTHER_DEPLOYMENT"] not in text_of("#deployments-table")
    go("#/fleet")
    wait_text("main", "needs an admin token")
    assert not element("#fleet-link").is_displayed()

    step("a plan that does not include a model refuses it, at its line, naming the plan that does")
    sign_out()
    sign_in(E["OTHER_TOKEN"], E["OTHER_TENANT"])
    go("#/applications/apply")
    wait("the editor", lambda: element("#manifest").is_displayed())
    set_text("#manifest", "\n".join([
        "application:",
        "  name: coder",
        "  pods:",
        "    - name: bot",
        f"      image: {E['CPU_IMAGE']}",
        "      gpu:",
        "        enabled: true",
        "        model: qwen-2.5-14b",
        "",
    ]))
    wait_text("#findings", "line 8")
    wait_text("#findings", "Scale plan")
    wait_text("#dry-run-verdict", "error")
    shot("plan-refused")

    step("an admin sees both tenants with the tenant filter")
    sign_out()
    sign_in(E["ADMIN_TOKEN"], "admin")
    wait("the tenant filter", lambda: element("#tenant-filter").is_displayed())
    assert element("label[for=tenant-filter]").text == "Tenant"
    tenants = [o.get_attribute("value") for o in Select(element("#tenant-filter")).options]
    assert E["USER_TENANT"] in tenants and E["OTHER_TENANT"] in tenants and "_cluster" not in tenants, tenants
    go("#/deployments")
    Select(element("#tenant-filter")).select_by_value(E["USER_TENANT"])
    wait_text("#deployments-table", full_name)
    Select(element("#tenant-filter")).select_by_value(E["OTHER_TENANT"])
    wait_text("#deployments-table", E["OTHER_DEPLOYMENT"])
    assert full_name not in text_of("#deployments-table")
    wait_text("#live", "Live")
    shot("admin-deployments")
    go("#/usage")
    wait_text("#usage-facts", E["OTHER_TENANT"])
    assert "_cluster" not in text_of("main")

    step("the fleet: nodes, GPUs, tenants and plans")
    go("#/fleet")
    wait_text("#tenants-table", E["USER_TENANT"])
    wait_text("#tenants-table", E["OTHER_TENANT"])
    node = E["NODE"]
    wait_text(f"#gpus-{node}", "healthy")
    wait_text("#nodes-table", node)
    wait_text("#live", "Live")
    rows = lambda css: driver.execute_script("return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText)", css)
    row = lambda: [r for r in rows(f"#gpus-{node} tbody tr") if r.startswith("3\t") or r.startswith("3 ")]
    assert row() and "unhealthy" not in row()[0], row()

    step("a GPU turns unhealthy after a fake-NVML XID event, live")
    with open(E["NVML_EVENTS"], "a") as events:
        events.write("xid 3 79\n")
    wait("GPU 3 to show unhealthy (Xid79) without a reload", lambda: row() and "unhealthy (Xid79)" in row()[0])
    others = [r for r in rows(f"#gpus-{node} tbody tr") if r not in row()]
    assert others and all("unhealthy" not in r for r in others), others
    shot("fleet")

    step("cordon and uncordon a node")
    click(f"button[aria-label='Cordon {node}']")
    wait("the node cordoned", lambda: any(node in r and "cordoned" in r for r in rows("#nodes-table tr")))
    click(f"button[aria-label='Uncordon {node}']")
    wait("the node schedulable", lambda: any(node in r and "cordoned" not in r for r in rows("#nodes-table tr")))

    step("readable at phone width")
    driver.set_window_size(390, 844)
    go("#/deployments")
    Select(element("#tenant-filter")).select_by_value(E["USER_TENANT"])
    wait_text("#deployments-table", full_name)
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width} px wide at 390 px"
    shot("phone-deployments")

    step("an api-server that does not answer is named")
    driver.set_window_size(1280, 900)
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    go_hash = "#/events"
    driver.execute_script("location.hash = arguments[0]", go_hash)
    wait_text("#banner", "does not answer")
    shot("unreachable")
    driver.set_network_conditions(offline=False, latency=0, download_throughput=-1, upload_throughput=-1)
    driver.execute_script("location.hash = '#/deployments'")
    wait_text("#deployments-table", full_name)
    wait("the banner to clear", lambda: text_of("#banner") == "")

    step("the deployment deleted after confirming")
    driver.set_window_size(1280, 900)
    go("#/deployments")
    wait_text("#deployments-table", full_name)
    driver.find_element(By.LINK_TEXT, full_name).click()
    wait_text("h2", full_name)
    # By keyboard: the delete button, then Enter on the confirmation, which takes the focus.
    element("#delete-button").send_keys(Keys.ENTER)
    wait("the confirmation", lambda: element("#delete-confirm").is_displayed())
    assert driver.switch_to.active_element.get_attribute("id") == "delete-confirm-button"
    shot("deployment-delete-confirm")
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait("the list without it", lambda: "#/deployments" == driver.execute_script("return location.hash") and full_name not in text_of("#deployment-list") and text_of("#deployment-list") != "")
    print("all steps passed", flush=True)
except Exception as error:  # noqa: BLE001 - report any failure with the page as it was
    print(f"FAILED at step '{step_name}': {error}", flush=True)
    traceback.print_exc()
    try:
        driver.save_screenshot(os.path.join(SHOTS, "failure.png"))
        print("page text:\n" + driver.find_element(By.TAG_NAME, "body").text[:4000])
        for entry in (console + driver.get_log("browser"))[-30:]:
            print("console:", entry.get("level"), entry.get("message"))
    except Exception:  # noqa: BLE001
        pass
    driver.quit()
    sys.exit(1)
driver.quit()
