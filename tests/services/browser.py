"""A headless Debian chromium driven by selenium through Debian's chromedriver, for the dashboard's test.

`ensure_chromium()` installs the `chromium` and `chromium-driver` packages with apt-get when their binaries are
missing, as `ensure_redis_server()` does for Redis (CI machines are fresh Debian). Selenium is pointed at these
binaries, so it never downloads a browser or a driver of its own.
"""

from __future__ import annotations

import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.services.apt import ensure_package


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def ensure_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths, installing Debian's packages first if missing (needs root and apt-get)."""
    browser = ensure_package("chromium", lambda: _which("chromium", "chromium-browser"))
    driver = ensure_package("chromium-driver", lambda: _which("chromedriver"))
    return browser, driver


def headless_chromium() -> webdriver.Chrome:
    """A new headless chromium session that keeps the page's console messages (`get_log("browser")`)."""
    browser, driver = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))
