#!/usr/bin/python3
"""Drives the coordinator's web console in headless Chromium (Debian's chromium and
chromium-driver, through python3-selenium) the way an operator would, and prints one
`PASS <what>` or `FAIL <what>: <why>` line per check for tests/e2e/console.sh to count.

Run inside a lab namespace that reaches the coordinator (console.sh runs it in the mgmt
namespace). The browser trusts the lab CA's certificate only through
--ignore-certificate-errors: console.sh checks the certificate with curl and the lab CA first.
"""
import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

GREY = "rgb(158, 158, 158)"  # --drained in app.css
GREEN = "rgb(46, 125, 50)"  # --ok

RESULTS = []


def report(ok, what, why=""):
    RESULTS.append(ok)
    print(f"PASS {what}" if ok else f"FAIL {what}: {why}", flush=True)


def wait(cond, timeout=20.0):
    """Polls cond() until it returns something truthy; returns it, or None on timeout."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = cond()
            if v:
                return v
        except Exception:  # element not there yet, or replaced by a re-render
            pass
        time.sleep(0.2)
    return None


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--ignore-certificate-errors", "--window-size=1280,1900",
              f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-sync",
              "--disable-component-update", "--disable-default-apps"]:
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def fill(d, form, values):
    f = d.find_element(By.ID, form)
    for name, value in values.items():
        field = f.find_element(By.NAME, name)
        if field.tag_name == "select":
            Select(field).select_by_visible_text(value)
            continue
        field.clear()
        field.send_keys(value)
    f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


# The page redraws on every pushed change, so reads run as one script (never a stale handle).
NODES_JS = """return [...document.querySelectorAll('#topology g.node')].map(g => [g.dataset.name,
  g.querySelector('text').textContent, getComputedStyle(g.querySelector('rect')).fill]);"""
VPC_JS = """const e = document.querySelector(`#tenants li.vpc[data-vpc="${arguments[0]}"] > .vpc-name`);
return e ? e.textContent : '';"""


def nodes(d):
    """{name: (label, fill)} of the drawn topology."""
    return {n: (label, fill) for n, label, fill in d.execute_script(NODES_JS)}


def node_fill(d, name):
    return nodes(d).get(name, ("", ""))[1]


def vpc_text(d, key):
    return d.execute_script(VPC_JS, key)


def click(d, by, sel, timeout=20.0):
    """Clicks the element (retried: a redraw may replace it between finding and clicking)."""
    def go():
        d.find_element(by, sel).click()
        return True
    return wait(go, timeout)


def sfctl(cmd, *args):
    return subprocess.run(shlex.split(cmd) + list(args), capture_output=True, text=True,
                          timeout=60)


def login(d, a):
    d.get(a.url)
    report(wait(lambda: d.find_element(By.ID, "login-panel").is_displayed()) is not None,
           "without a session the console shows the login form")
    d.find_element(By.ID, "login-user").send_keys("cloudstack")
    d.find_element(By.ID, "login-password").send_keys("wrong")
    d.find_element(By.ID, "login-submit").click()
    bad = wait(lambda: d.find_element(By.ID, "login-error").text)
    report(bad == "invalid credentials", "a wrong password is refused", repr(bad))
    d.find_element(By.ID, "login-password").clear()
    d.find_element(By.ID, "login-password").send_keys(open(a.password_file).read().strip())
    d.find_element(By.ID, "login-submit").click()
    ok = wait(lambda: d.find_element(By.ID, "console").is_displayed()
              and d.find_element(By.ID, "live").text == "live")
    report(ok is not None, "the REST user logs in and the live stream connects")
    d.execute_script("window.__noReload = 42")


def topology(d):
    drawn = wait(lambda: "hv1" in nodes(d) and nodes(d)) or {}
    for n in ["hv1", "hv2", "hv3", "spine1", "leaf1", "leaf2", "gw1", "gw2", "internet"]:
        report(drawn.get(n, ("",))[0] == n, f"the topology shows {n}",
               f"nodes drawn: {sorted(drawn)}")
    green = wait(lambda: all(node_fill(d, h) == GREEN for h in ["hv1", "hv2", "hv3"]))
    report(green is not None, "hv1..hv3 are green (lease up, in sync)",
           str([node_fill(d, h) for h in ["hv1", "hv2", "hv3"]]))
    ups = lambda: d.execute_script("return document.querySelectorAll('#topology line.link-up').length")
    up = wait(lambda: ups() >= 8, 30)
    report(up is not None, "fabric links are drawn up", f"{ups()} up links")
    rows = d.execute_script("return document.querySelectorAll('#fleet tbody tr').length")
    report(rows == 8, "the fleet table lists the 8 nodes", f"{rows} rows")


def link_class(d, a, b):
    return d.execute_script(
        "const l = document.querySelector(`#topology line[data-a='${arguments[0]}'][data-b='${arguments[1]}']`);"
        " return l ? l.getAttribute('class') + ' | ' + l.textContent : '';", a, b)


def hv1_down_in_tip(d):
    """The hv1-leaf1 tooltip has one line per end ("hv1: Idle (rcvd/sent ...)"), and hv1,
    whose port went down, no longer reports the session Established."""
    tip = link_class(d, "hv1", "leaf1").split("\n")
    ends = {line.split(":")[0]: line for line in tip[1:]}
    return sorted(ends) == ["hv1", "leaf1"] and "Established" not in ends["hv1"]


def link_flap(d, a):
    """Takes hv1's port towards leaf1 down inside the lab: the link's BGP session drops at both
    ends, and the console must draw it red, then green again once the port is back up."""
    up = wait(lambda: "link-up" in link_class(d, "hv1", "leaf1"), 60)
    report(up is not None, "the hv1-leaf1 link is green (BGP Established at both ends)",
           link_class(d, "hv1", "leaf1"))
    try:
        r = subprocess.run(shlex.split(a.link_down), capture_output=True, text=True, timeout=20)
        report(r.returncode == 0, "hv1's leaf1 port is taken down in its namespace", r.stderr)
        down = wait(lambda: "link-down" in link_class(d, "hv1", "leaf1"), 40)
        report(down is not None, "the hv1-leaf1 link turns red in the browser",
               link_class(d, "hv1", "leaf1"))
        report(wait(lambda: hv1_down_in_tip(d), 20) is not None,
               "its tooltip shows the session state at both ends, hv1's not Established",
               link_class(d, "hv1", "leaf1").replace("\n", " / "))
        other = link_class(d, "hv2", "leaf1")
        report("link-up" in other, "hv2-leaf1 stays green", other)
    finally:
        r = subprocess.run(shlex.split(a.link_up), capture_output=True, text=True, timeout=20)
    report(r.returncode == 0, "the port is brought back up", r.stderr)
    back = wait(lambda: "link-up" in link_class(d, "hv1", "leaf1"), 90)
    report(back is not None, "the hv1-leaf1 link turns green again",
           link_class(d, "hv1", "leaf1"))


def drain(d, a):
    before = vpc_text(d, "demo/blue")
    serving = "gw1" if "serving gw1" in before else "gw2"
    other = "gw2" if serving == "gw1" else "gw1"
    click(d, By.ID, f"drain-{serving}")
    grey = wait(lambda: node_fill(d, serving) == GREY, 30)
    report(grey is not None, f"draining {serving} turns it grey", node_fill(d, serving))
    moved = wait(lambda: f"serving {other}" in vpc_text(d, "demo/blue"), 30)
    report(moved is not None, f"VPC blue's serving gateway moves to {other}",
           vpc_text(d, "demo/blue"))
    placed = sfctl(a.sfctl, "-o", "json", "gateway", "list")
    try:
        drained = json.loads(placed.stdout)["drained"]
    except (ValueError, KeyError):
        drained = None
    report(drained == [serving], "sfctl sees the drain the console made",
           f"drained {drained!r}: {placed.stderr}")
    click(d, By.ID, f"undrain-{serving}")
    back = wait(lambda: node_fill(d, serving) == GREEN, 30)
    report(back is not None, f"undraining {serving} makes it green again", node_fill(d, serving))


def vpcs(d, a):
    fill(d, "vpc-form", {"tenant": "demo", "name": "console1", "cidr": "10.77.0.0/16"})
    shown = wait(lambda: "10.77.0.0/16" in vpc_text(d, "demo/console1"))
    report(shown is not None, "a VPC created through the form appears without a reload")
    fill(d, "vpc-form", {"tenant": "demo", "name": "badcidr", "cidr": "10.0.0.0/33"})
    msg = wait(lambda: d.find_element(By.CSS_SELECTOR, "#message.error").text)
    report(msg == a.expect_error, "a bad CIDR shows the API's own message",
           f"console {msg!r}, sfctl {a.expect_error!r}")
    r = sfctl(a.sfctl, "vpc", "create", "outside", "--tenant", "demo",
              "--cidr", "10.78.0.0/16")
    shown = wait(lambda: "10.78.0.0/16" in vpc_text(d, "demo/outside"))
    report(r.returncode == 0 and shown is not None,
           "a VPC sfctl creates appears live (no reload)", r.stderr)
    click(d, By.CSS_SELECTOR, '#tenants li.vpc[data-vpc="demo/console1"] > button.delete')
    gone = wait(lambda: vpc_text(d, "demo/console1") == "" and vpc_text(d, "demo/outside"))
    report(gone is not None, "deleting the VPC removes it from the page")
    still = d.execute_script("return window.__noReload")
    report(still == 42, "the page was never reloaded", repr(still))


ROWS_JS = """return [...document.querySelectorAll(arguments[0] + ' tbody tr')].map(
  tr => [...tr.querySelectorAll('td')].map(td => td.textContent));"""


def row(d, table, name):
    """The cells of the row of `table` whose second cell is `name`, or None."""
    return next((r for r in d.execute_script(ROWS_JS, table) if len(r) > 1 and r[1] == name),
                None)


def services(d):
    fill(d, "nat-form", {"tenant": "demo", "vpc": "blue", "name": "cfwd", "kind": "port_forward",
                         "public_ip": "203.0.113.40", "private_ip": "10.10.1.11",
                         "protocol": "tcp", "public_port": "8080", "private_port": "80"})
    r = wait(lambda: row(d, "#nat", "cfwd"))
    report(r is not None and r[3] == "203.0.113.40:8080/tcp -> 10.10.1.11:80",
           "a port forward created through the form is listed", repr(r))
    fill(d, "lb-form", {"tenant": "demo", "vpc": "blue", "name": "cweb", "vip": "203.0.113.41",
                        "port": "80", "backends": "10.10.1.11:80,10.10.1.12:80",
                        "health_type": "tcp"})
    r = wait(lambda: (lambda x: x if x and x[3] and x[4] and x[5].count(" up") == 2 else None)(
        row(d, "#lbs", "cweb")), 40)
    report(r is not None, "a load balancer created through the form shows its gateway, Maglev "
           "digest and both backends up", repr(row(d, "#lbs", "cweb")))
    for table, name in [("#nat", "cfwd"), ("#lbs", "cweb")]:
        click(d, By.XPATH, f"//*[@id='{table[1:]}']//tr[td[2]='{name}']//button")
        gone = wait(lambda: row(d, table, name) is None)
        report(gone is not None, f"deleting {name} removes it from the page")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--expect-error", required=True)
    p.add_argument("--sfctl", required=True, help="sfctl command line (with lab flags)")
    p.add_argument("--screenshot", required=True)
    p.add_argument("--link-down", required=True, help="command taking hv1's leaf1 port down")
    p.add_argument("--link-up", required=True, help="command bringing it back up")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as profile:
        d = browser(profile)
        try:
            login(d, a)
            topology(d)
            link_flap(d, a)
            drain(d, a)
            vpcs(d, a)
            services(d)
        except Exception as e:  # a broken page: one failure with its reason
            report(False, "the console test ran to its end", repr(e))
        finally:
            try:
                d.save_screenshot(a.screenshot)
                report(True, f"screenshot saved to {a.screenshot}")
            finally:
                d.quit()
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
