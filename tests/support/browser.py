"""Headless Chromium driven by selenium (Debian's ``chromium`` + ``chromium-driver``), for the
tests that use a real browser (tests/interop/test_browser.py, tests/integration/test_status_page.py).
Missing locally: the test skips; under CI (CI=true) it fails (:func:`tests.support.relay.require`)."""

import contextlib

from tests.support.relay import require, require_tool

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run")


@contextlib.contextmanager
def chromium(tmp_path, *args):
    """A selenium driver of a fresh headless Chromium (its profile and chromedriver's log under
    ``tmp_path``, the browser's console log kept), with ``args`` added to its command line;
    quit on leaving."""
    require_tool(CHROMIUM, "Debian's chromium package (.ci/run installs it)")
    require_tool(CHROMEDRIVER, "Debian's chromium-driver package (.ci/run installs it)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ARGS + ("--user-data-dir=%s" % (tmp_path / "chromium-profile"),) + args:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
