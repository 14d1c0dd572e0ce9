"""The web study end to end in a real browser (issue 28): headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) gives consent, answers 20 items with the keyboard and the mouse, reloads
and reopens the page and resumes where it was, finishes, and the answers are in SQLite and analysable.

The study asks Papernot et al.'s questions ("The Limitations of Deep Learning in Adversarial Settings", EuroS&P
2016): is this a digit, which digit. Without Chromium, chromedriver or Selenium the test is skipped, unless
``ADVKIT_REQUIRE_BROWSER=1`` (``make test`` sets it): then it fails and says what to install.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.humans_server import ATTENTION, ITEMS, copy_run, i28_run_fixture, serve  # noqa: F401  (the session's JSMA run)

pytest.importorskip("starlette", reason="the web study needs pip install 'advkit[humans]'")
pytest.importorskip("uvicorn", reason="the web study needs pip install 'advkit[humans]'")

N_ITEMS, N_ATTENTION = ITEMS, ATTENTION


def _find(*names: str) -> str | None:
    for name in names:
        found = Path(name) if name.startswith("/") and Path(name).is_file() else None
        path = str(found) if found else shutil.which(name)
        if path:
            return path
    return None


def _browser() -> tuple[str, str]:
    """Chromium's and chromedriver's paths; skip (or fail under ``ADVKIT_REQUIRE_BROWSER=1``) naming what is
    missing and how to install it."""
    chromium = _find("/usr/bin/chromium", "chromium", "chromium-browser")
    driver = _find("/usr/bin/chromedriver", "chromedriver")
    missing = [what for what, ok in (("chromium", chromium), ("chromedriver", driver),
                                     ("selenium", importlib.util.find_spec("selenium"))) if not ok]
    if missing:
        msg = (f"the browser test needs {', '.join(missing)}: install them with `apt-get install chromium "
               f"chromium-driver` and `pip install selenium` (or `make browser`)")
        if os.environ.get("ADVKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " (ADVKIT_REQUIRE_BROWSER=1 makes this a failure)")
        pytest.skip(msg)
    assert chromium and driver
    return chromium, driver


@pytest.fixture(scope="module")
def study(tmp_path_factory, i28_jsma_run):
    from advkit.humans.app import create_app

    run = copy_run(i28_jsma_run, tmp_path_factory.mktemp("i28browser"))
    app = create_app(run, items_per_participant=N_ITEMS, attention_checks=N_ATTENTION, seed=0)
    with serve(app) as base:
        yield run, base


@pytest.fixture(scope="module")
def driver():
    chromium, chromedriver = _browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,900"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    d.set_page_load_timeout(20)
    yield d
    d.quit()


def _item_meta(run: Path) -> dict[int, tuple[str, int]]:
    with closing(sqlite3.connect(run / "humans.sqlite")) as con:
        return {i: (k, s) for i, k, s in con.execute("SELECT id, kind, source FROM items")}


def test_a_participant_answers_resumes_and_finishes_in_chromium(driver, study):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    run, base = study
    wait = WebDriverWait(driver, 10, poll_frequency=0.05,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

    def current() -> tuple[int, int, int]:
        """(item id, answered K, total N) of the item page shown."""
        wait.until(ec.presence_of_element_located((By.ID, "answer-form")))
        k, n = (int(v) for v in driver.find_element(By.ID, "progress").text.split("/"))
        item = int(driver.find_element(By.CSS_SELECTOR, "#answer-form input[name=item]").get_attribute("value"))
        image = driver.find_element(By.ID, "item-image")
        assert image.get_attribute("src").endswith(f"/image/{item}")
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
        return item, k, n

    driver.get(base + "/")
    wait.until(ec.element_to_be_clickable((By.ID, "consent"))).click()
    wait.until(ec.url_contains("/instructions"))
    driver.find_element(By.ID, "start").click()

    meta = _item_meta(run)
    given: dict[int, tuple[int, int]] = {}
    item, k, n = current()
    assert k == 0 and n == N_ITEMS

    def answer(use_keyboard: bool) -> None:
        nonlocal item, k
        kind, source = meta[item]
        is_digit, label = (1, source) if kind == "attention" else (len(given) % 2, (len(given) * 7) % 10)
        if use_keyboard:
            ActionChains(driver).send_keys("y" if is_digit else "n").send_keys(str(label)).send_keys(
                Keys.ENTER).perform()
        else:
            driver.find_element(By.ID, "is-digit-yes" if is_digit else "is-digit-no").click()
            driver.find_element(By.ID, f"label-{label}").click()
            driver.find_element(By.ID, "submit").click()
        given[item] = (is_digit, label)
        if len(given) == n:
            return
        try:
            wait.until(lambda d: d.find_element(By.ID, "progress").text.split("/")[0].strip() == str(k + 1))
            advanced = True
        except TimeoutException:
            advanced = False
        if not advanced:
            errors = [e["message"] for e in driver.get_log("browser") if e.get("source") == "javascript"]
            how = "keys y/n, digit, Enter" if use_keyboard else "mouse clicks"
            pytest.fail(f"answer {len(given)} of {n} ({how}) did not advance the progress from {k}; now at "
                        f"{driver.current_url}; the page's JavaScript errors: {errors}")
        nxt, k, _ = current()
        assert nxt not in given  # never the same image twice
        item = nxt

    for i in range(20):
        answer(use_keyboard=i % 3 != 2)
    assert k == 20

    driver.refresh()  # a reload shows the same unanswered item, with the same progress
    assert current() == (item, 20, n)

    first = driver.current_window_handle
    driver.switch_to.new_window("tab")  # close the tab, come back later at the study's address
    driver.switch_to.window(first)
    driver.close()
    driver.switch_to.window(driver.window_handles[0])
    driver.get(base + "/")
    assert current() == (item, 20, n)

    while len(given) < n:
        answer(use_keyboard=len(given) % 2 == 0)
    wait.until(ec.url_contains("/done"))
    assert driver.find_element(By.ID, "done").is_displayed()

    with closing(sqlite3.connect(run / "humans.sqlite")) as con:
        (pid,) = con.execute("SELECT id FROM participants WHERE finished IS NOT NULL").fetchone()
        assigned = {i for (i,) in con.execute("SELECT item FROM assignments WHERE participant = ?", (pid,))}
        rows = con.execute("SELECT item, is_digit, label, seconds FROM answers WHERE participant = ?",
                           (pid,)).fetchall()
    assert len(assigned) == n and len(rows) == n and {r[0] for r in rows} == assigned == set(given)
    assert {r[0]: (r[1], r[2]) for r in rows} == given
    assert all(r[3] > 0 for r in rows)
    kinds = [meta[i][0] for i in assigned]
    assert kinds.count("attention") == N_ATTENTION and "adversarial" in kinds and "control" in kinds

    from advkit.humans.analysis import humans_study

    result = humans_study(run, n_boot=50)  # the attention checks were answered right: the participant is kept
    assert result.counts["total"] == result.counts["kept"] == 1 and result.counts["answers"] == n
    assert result.counts["kept_answers"] == n - N_ATTENTION
    adversarial = [given[i][0] for i in given if meta[i][0] == "adversarial"]
    said_digit = result.overall["adversarial"]["is_digit"]
    assert said_digit.answers == len(adversarial)
    assert said_digit.value == pytest.approx(sum(adversarial) / len(adversarial))
