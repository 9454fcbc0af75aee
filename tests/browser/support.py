"""Helpers for the dashboard's tests: a service scraped by the lab's Prometheus, and headless Chromium.

The lab's metrics stand-in simulates the service's VMs on random loopback addresses; a file_sd target file gives
them the `service` label, as the portal's provisioning does. The file lives in a directory of the tests' own next
to the portal's targets directory, read by a scrape job of the tests' own: provisioning owns PROMETHEUS_TARGETS_DIR
and removes any file there it did not write, so provisioning tests in the same session would pull the data away.
"""

import json
import random
import string
import time
from pathlib import Path

import yaml

from integrations.prometheus import PrometheusClient
from lab.components import metrics

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# facts.md: the flags that keep Chromium offline and quiet in a container.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1800",
)
TEST_JOB = "dashboard-tests"
TEST_TARGETS_DIR = "dashboard-test-targets"

CPU_EXPRESSION = '100 - (avg by (service) (rate(node_cpu_seconds_total{{mode="idle",service="{service}"}}[30s])) * 100)'


def random_service_name(prefix="dash"):
    return f"{prefix}-" + "".join(random.choices(string.ascii_lowercase, k=6))


def scraped_service(lab, service, *, cpu_percent, memory_percent, vms=2, timeout=30.0):
    """Simulate `vms` VMs of `service` at the given load and wait until Prometheus has a CPU rate for them.

    Returns {"service", "targets", "addresses", "target_file"}.
    """
    prom = lab.info("prometheus")
    standin = metrics.client(lab)
    vm_port = lab.info("metrics")["vm_port"]
    addresses = [str(host) for host in list(metrics.random_loopback_network().hosts())[:vms]]
    for address in addresses:
        standin.register_vm(address, service)
    standin.set_load(service, cpu_percent=cpu_percent * vms, memory_percent=memory_percent * vms)
    targets = [f"{address}:{vm_port}" for address in addresses]

    targets_dir = Path(prom["targets_dir"]).parent / TEST_TARGETS_DIR
    targets_dir.mkdir(parents=True, exist_ok=True)
    target_file = targets_dir / f"{service}.json"
    tmp = target_file.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": targets, "labels": {"service": service}}]))
    tmp.replace(target_file)

    config_file = Path(prom["config_file"])
    config = yaml.safe_load(config_file.read_text())
    jobs = config.setdefault("scrape_configs", [])
    client = PrometheusClient(prom["url"], timeout=5)
    if not any(job.get("job_name") == TEST_JOB for job in jobs):
        jobs.append(
            {
                "job_name": TEST_JOB,
                "scrape_interval": "1s",
                "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "1s"}],
            }
        )
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        client.reload()

    expression = CPU_EXPRESSION.format(service=service)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A rate needs two scrapes; ask a little in the past so a range query ending "now" has a point too.
        result = client.query(expression, time=time.time() - 1.5)
        if result and result[0].value == result[0].value:  # a number, not NaN
            return {"service": service, "targets": targets, "addresses": addresses, "target_file": target_file}
        time.sleep(0.25)
    raise AssertionError(f"Prometheus at {prom['url']} has no CPU rate for {service} after {timeout:.0f}s")


# One simulated service for every dashboard test of a session: waiting for Prometheus' first rates costs seconds.
SHARED_CPU = 60.0
SHARED_MEMORY = 40.0
_shared = {}


def shared_scraped_service(lab):
    """The session's scraped service at SHARED_CPU / SHARED_MEMORY per VM (2 VMs); it lives as long as the lab."""
    key = str(lab.run_dir)
    info = _shared.get(key)
    if info is not None:
        # Another test of the session may have reset the stand-in or replaced prometheus.yml: set up again then.
        registered = {vm["address"] for vm in metrics.client(lab).state()["vms"]}
        config = Path(lab.info("prometheus")["config_file"]).read_text()
        if not set(info["addresses"]) <= registered or TEST_JOB not in config or not info["target_file"].is_file():
            del _shared[key]
    if key not in _shared:
        _shared[key] = scraped_service(
            lab, random_service_name("dash"), cpu_percent=SHARED_CPU, memory_percent=SHARED_MEMORY
        )
    return _shared[key]


def chromium_driver(lang=None):
    """Headless Chromium through Debian's chromedriver (never a downloaded one); `lang` ("en", "ko") is the
    browser's language, sent as Accept-Language as a person's browser would."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    if lang:
        options.add_argument(f"--lang={lang}")
        options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def closed_loopback_url():
    """An http URL on a loopback port nothing listens on (connection refused at once)."""
    from lab.core import free_port

    return f"http://127.0.0.1:{free_port()}"


# Every text of the page a person reads: text nodes (SVG labels included), tooltips, labels of controls and the
# charts' <title>s; one per line, as tests/test_i18n.py reads the server's HTML.
PAGE_TEXTS_JS = """
const out = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  if (!node.parentElement || node.parentElement.closest("script, style")) continue;
  const text = node.textContent.replace(/\\s+/g, " ").trim();
  if (text) out.push(text);
}
for (const el of document.body.querySelectorAll("[title], [aria-label], [placeholder], input[type=submit]")) {
  for (const name of ["title", "aria-label", "placeholder"]) {
    const value = (el.getAttribute(name) || "").trim();
    if (value) out.push(value);
  }
  if (el.matches("input[type=submit]") && el.value.trim()) out.push(el.value.trim());
}
return out;
"""


def page_texts(driver):
    return driver.execute_script(PAGE_TEXTS_JS)
