"""Take the user guide's screenshots from a running portal with headless Chromium (Debian's chromium).

    .venv/bin/python docs/img/screenshots.py --url http://127.0.0.1:8000 --user admin --password ... [--lang en ko]

Logs in through the admin's login form and saves docs/img/<lang>/<name>.png for each page below. The language is
chosen as a browser would (Accept-Language), so the same pages show in English and in Korean. The Korean pages need
a Korean font (Debian's fonts-noto-cjk, which scripts/install-system-deps.sh installs); without one the script stops
and says so rather than save screenshots full of boxes.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
# Chromium draws boxes for Hangul without a Korean font: Debian's fonts-noto-cjk (Noto Sans CJK KR), which
# scripts/install-system-deps.sh installs.
KOREAN_FONT_PACKAGE = "fonts-noto-cjk"
WIDTH = 1400
MAX_HEIGHT = 3200

# name -> path (relative to the portal's URL); {event}, {config}, {pool} are filled in from the command line.
PAGES = {
    "admin-index": "/admin/",
    "templates": "/admin/templates_app/vmtemplate/",
    "template-create": "/admin/templates_app/vmtemplate/create-from-vm/",
    "configs": "/admin/autoscaling/autoscalingconfig/",
    "config-form": "/admin/autoscaling/autoscalingconfig/{config}/change/",
    "ip-pools": "/admin/autoscaling/ippool/",
    "instances": "/admin/fleet/managedinstance/",
    "dashboard": "/admin/monitoring/",
    "events": "/admin/events/scaleoutevent/",
    "event-succeeded": "/admin/events/scaleoutevent/{event}/change/",
    "event-rolled-back": "/admin/events/scaleoutevent/{failed_event}/change/",
    "decisions": "/admin/events/scalingdecision/",
    "notifications": "/admin/events/alertnotification/",
}


def driver_for(lang):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={WIDTH},1000")
    options.add_argument(f"--lang={lang}")
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def korean_font_missing():
    """True when fontconfig knows no font for Korean (or fontconfig itself is missing)."""
    if shutil.which("fc-list") is None:
        return True
    found = subprocess.run(["fc-list", ":lang=ko", "family"], capture_output=True, text=True, check=False)
    return not found.stdout.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--lang", nargs="+", default=["en", "ko"])
    parser.add_argument("--event", default="1", help="id of a succeeded scale-out event")
    parser.add_argument("--failed-event", default="1", help="id of a rolled back scale-out event")
    parser.add_argument("--config", default="1", help="id of an autoscaling config")
    parser.add_argument("--only", nargs="*", help="page names (default: all)")
    args = parser.parse_args(argv)
    if "ko" in args.lang and korean_font_missing():
        parser.exit(
            1,
            f"No Korean font: the Korean screenshots would show boxes. Install it (as root): "
            f"apt-get install -y {KOREAN_FONT_PACKAGE}   (or run scripts/install-system-deps.sh)\n",
        )
    base = args.url.rstrip("/")
    out_root = Path(__file__).resolve().parent
    for lang in args.lang:
        out = out_root / lang
        out.mkdir(exist_ok=True)
        driver = driver_for(lang)
        try:
            driver.get(f"{base}/admin/login/")
            driver.find_element(By.NAME, "username").send_keys(args.user)
            driver.find_element(By.NAME, "password").send_keys(args.password)
            driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
            for name, path in PAGES.items():
                if args.only and name not in args.only:
                    continue
                path = path.format(event=args.event, failed_event=args.failed_event, config=args.config)
                driver.set_window_size(WIDTH, 1000)
                driver.get(base + path)
                # The whole page in the viewport: the window is the viewport plus the browser's own frame.
                height = driver.execute_script("return document.documentElement.scrollHeight")
                frame = driver.execute_script("return window.outerHeight - window.innerHeight")
                driver.set_window_size(WIDTH, min(max(height, 600), MAX_HEIGHT) + frame)
                target = out / f"{name}.png"
                driver.save_screenshot(str(target))
                print(f"{target.relative_to(out_root.parent.parent)}  <- {path}")
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
