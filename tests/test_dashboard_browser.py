"""The dashboard end to end in headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by Selenium with the system chromedriver — Selenium Manager never downloads anything):
log in, find a fact told through the chat pipeline, edit it, see `!recall` in chat return the
edited version, forget it. Screenshots of the main pages go to bench-results/screenshots/
(gitignored; CLARA_SCREENSHOT_DIR overrides). Skipped when Chromium or chromedriver is missing."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from clara.chat import ChatEngine, IncomingMessage
from clara.dashboard import DashboardSettings, DashboardState, start

TOKEN = "browser-test-token-0987654321"
ROOT = Path(__file__).resolve().parent.parent


def _find(*names: str) -> str | None:
    for n in names:
        found = shutil.which(n) or (n if os.path.isabs(n) and os.access(n, os.X_OK) else None)
        if found:
            return found
    return None


CHROMIUM = _find("chromium", "chromium-browser", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMEDRIVER = _find("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def msg(text: str) -> IncomingMessage:
    return IncomingMessage(user_id="alice", display_name="Alice", channel_id="general", text=text)


@pytest.fixture
def driver():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


@pytest.mark.parametrize("backend", ["sqlite"])  # one backend keeps the run short; HTTP tests cover both
async def test_login_search_edit_recall_forget_in_chromium(driver, store, backend):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("CLARA_SCREENSHOT_DIR") or ROOT / "bench-results" / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {shots}")

    engine = ChatEngine(store)
    state = DashboardState(store, settings=DashboardSettings(token=TOKEN), engine=engine)
    server = await start(state, host="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{server.port}"
    wait = WebDriverWait(driver, 15)

    def shot(name: str) -> None:
        driver.save_screenshot(str(shots / f"{name}.png"))

    def text_of(css: str) -> str:
        return driver.find_element(By.CSS_SELECTOR, css).text

    try:
        told = await engine.handle(msg("My sister Anna is moving to Porto in June"))
        assert not told.error
        await engine.drain()

        def login_and_edit() -> int:
            driver.get(base + "/memories")
            wait.until(ec.presence_of_element_located((By.ID, "token")))
            assert "/login" in driver.current_url
            shot("01-login")
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            driver.find_element(By.ID, "login").click()
            wait.until(ec.presence_of_element_located((By.ID, "q")))
            # Search with the chat's recall; htmx swaps the results in as you type.
            driver.find_element(By.ID, "q").send_keys("where is my sister moving")
            wait.until(ec.text_to_be_present_in_element((By.ID, "results"), "Porto"))
            assert "Anna" in text_of("#results")
            shot("03-memories-search")

            def open_porto(d) -> bool:
                # htmx may swap the results again (a request per keystroke): retry on a stale element
                try:
                    link = next(a for a in d.find_elements(By.CSS_SELECTOR, "a.fact-text") if "Porto" in a.text)
                    link.click()
                    return True
                except (StaleElementReferenceException, StopIteration):
                    return False

            wait.until(open_porto)
            wait.until(ec.presence_of_element_located((By.ID, "edit-text")))
            shot("04-fact")
            box = driver.find_element(By.ID, "edit-text")
            box.clear()
            box.send_keys("My sister Anna is moving to Lisbon in June")
            driver.find_element(By.ID, "save-edit").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "fact-content"), "Lisbon"))
            assert "superseded by" in driver.page_source and "Porto" in text_of("ol.versions")
            shot("05-fact-edited")
            return int(driver.current_url.rstrip("/").rsplit("/", 1)[1])

        new_id = await asyncio.to_thread(login_and_edit)
        edited = await store.get(new_id)
        assert edited.content == "My sister Anna is moving to Lisbon in June" and edited.supersedes_id
        assert (await store.get(edited.supersedes_id)).status == "superseded"

        # The chat now recalls the edited version, not the old one (the raw chat turn, a separate
        # memory of what was said, may still come up with its own id).
        reply = await engine.handle(msg("!recall where is my sister moving"))
        assert "moving to Lisbon" in reply.text and f"[#{new_id}]" in reply.text, reply.text
        assert f"[#{edited.supersedes_id}]" not in reply.text, reply.text

        def forget_and_tour() -> None:
            driver.find_element(By.ID, "forget").click()
            wait.until(ec.alert_is_present()).accept()  # hx-confirm
            wait.until(ec.text_to_be_present_in_element((By.ID, "fact-status"), "deleted"))
            shot("06-fact-forgotten")
            for name, path in (("02-status", "/"), ("07-entities", "/entities"), ("08-sessions", "/sessions")):
                driver.get(base + path)
                wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
                shot(name)
            driver.set_window_size(390, 844)  # a phone
            driver.get(base + "/memories")
            wait.until(ec.presence_of_element_located((By.ID, "q")))
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 400, f"page scrolls sideways on a phone ({width}px)"
            shot("09-memories-phone")
            driver.get(base + "/")
            shot("10-status-phone")
            logs = driver.get_log("browser")
            assert not [e for e in logs if "Content Security Policy" in e.get("message", "")], logs

        await asyncio.to_thread(forget_and_tour)
        assert (await store.get(new_id)).status == "deleted"
        reply = await engine.handle(msg("!recall where is my sister moving"))
        assert "Lisbon" not in reply.text and f"[#{new_id}]" not in reply.text, reply.text
        assert sorted(p.name for p in shots.glob("*.png")) >= ["01-login.png"]
    finally:
        await server.stop()
        state.errors.uninstall()
        await engine.aclose()
