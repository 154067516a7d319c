"""A real browser for the status page's tests: Debian's headless Chromium, driven by
selenium through Debian's chromedriver (both installed from apt when missing, as
tools.py installs promtool; selenium comes with the `test` extra). No browser download,
no Selenium Manager, nothing from the internet."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.tools import ROOT, _apt

ARTIFACTS = ROOT / ".artifacts" / "browser"  # screenshots, kept after the run (git-ignored)
# Headless, and quiet: without the networking flags Chromium keeps calling Google's hosts.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--window-size=1400,1000",
)


@functools.cache
def chromium() -> tuple[str, str]:
    """(the browser, its driver), installed from Debian's packages when missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        _apt("install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver")
        browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser is not None and driver is not None, "chromium and chromedriver missing"
    return browser, driver


@contextmanager
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="fender-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """What the page logged as errors (its own, and failed loads)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
