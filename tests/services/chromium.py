"""Debian's chromium and chromedriver for the browser tests, installed with apt-get when missing.

The browser comes from Debian's packages, never downloaded at run time: selenium is given both paths and run
with SE_OFFLINE, so its driver manager neither looks for nor fetches anything.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services.apt import ensure_package


def ensure_chromium() -> tuple[str, str]:
    """The paths of `chromium` and `chromedriver`, installing Debian's packages first if they are missing."""
    browser = ensure_package("chromium", lambda: shutil.which("chromium"))
    driver = ensure_package("chromium-driver", lambda: shutil.which("chromedriver"))
    return browser, driver


@contextmanager
def headless_chromium(profile_dir: Path) -> Iterator[object]:
    """A selenium WebDriver on a headless Debian chromium with its own profile directory; quit on exit."""
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", f"--user-data-dir={profile_dir}"):
        options.add_argument(argument)
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
