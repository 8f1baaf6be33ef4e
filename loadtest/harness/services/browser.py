"""Debian's headless chromium driven by selenium through Debian's chromedriver, for the browser tests (the
dashboard, the browser tracker's demo storefront).

`ensure_chromium()` installs the `chromium` and `chromium-driver` packages with apt-get when their binaries are
missing, as `ensure_redis_server()` does for Redis (CI machines are fresh Debian). Selenium is given both paths
and run with SE_OFFLINE, so its driver manager neither looks for nor downloads a browser or a driver.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from loadtest.harness.services.apt import ensure_package


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


@contextmanager
def headless_chromium(profile_dir: Path | None = None) -> Iterator[webdriver.Chrome]:
    """A headless chromium session (its own profile in ``profile_dir`` when given) that keeps the page's console
    messages (``get_log("browser")``); quit on exit."""
    browser, driver_path = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    if profile_dir is not None:
        options.add_argument(f"--user-data-dir={profile_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    finally:
        if previous is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = previous
    try:
        yield driver
    finally:
        driver.quit()
