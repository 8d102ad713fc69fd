"""End to end in a real browser: a first page URL, upload, train, watch the curve, rate in the lab; two sessions stay apart."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from metarec_core.synthetic import SyntheticConfig, make_synthetic

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(home: Path) -> Iterator[str]:
    """``streamlit run app.py`` in a new process with the run store ``home`` and the real data cache (ML-100K not re-fetched)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (.ci/run installs it)")
    from metarec_core.movielens import data_root

    env = dict(os.environ, METAREC_HOME=str(home), METAREC_DATA_DIR=str(data_root()))
    port = free_port()
    log = open(home / "streamlit.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"streamlit did not start; log: {(home / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.3)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module, with an empty run store."""
    with streamlit_server(tmp_path_factory.mktemp("browser-home")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def idle(page, timeout: float = 120_000) -> None:
    """Wait for the script run to finish (twice, so a rerun that starts right after is waited for too)."""
    page.wait_for_selector(IDLE, timeout=timeout)
    page.wait_for_timeout(400)
    page.wait_for_selector(IDLE, timeout=timeout)


def open_page(page, name: str) -> None:
    page.locator("[data-testid='stSidebarNav'] a", has_text=name).first.click()
    idle(page)


def metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']", has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def dataset_choice(page) -> str:
    """The dataset shown in the sidebar's picker."""
    return page.locator("[data-testid='stSidebar']").get_by_role("combobox", name="Dataset").input_value()


def tiny_file(folder: Path) -> Path:
    data = make_synthetic(SyntheticConfig(n_users=80, n_items=50, ratings_per_user=(12, 25), seed=5)).dataset
    r = data.ratings
    path = folder / "tiny ratings.csv"
    pd.DataFrame({
        "user_id": [data.users.external(int(u)) for u in r["user"]],
        "item_id": [data.items.external(int(i)) for i in r["item"]],
        "rating": r["rating"].astype(int),
        "timestamp": r["timestamp"],
    }).to_csv(path, index=False)
    return path


#: Run on the lab map's canvas: below its legend, the pixels of item dots (coloured, neither grey nor near-black) and the
#: solid 5 x 5 blocks of the path's near-black (its filled diamonds; the outline rings and the labels are thinner).
MAP_PIXELS = """(canvas) => {
  const ratio = window.devicePixelRatio || 1;
  const top = Math.round(40 * ratio);
  const w = canvas.width, h = canvas.height - top;
  const data = canvas.getContext('2d').getImageData(0, top, w, h).data;
  const dark = new Uint8Array(w * h);
  let items = 0;
  for (let i = 0; i < w * h; i++) {
    const r = data[4 * i], g = data[4 * i + 1], b = data[4 * i + 2], a = data[4 * i + 3];
    if (a < 128) continue;
    if (r < 70 && g < 70 && b < 70) dark[i] = 1;
    else if (Math.max(r, g, b) - Math.min(r, g, b) >= 12) items += 1;
  }
  let blocks = 0;
  for (let y = 0; y + 5 <= h; y++) for (let x = 0; x + 5 <= w; x++) {
    let full = true;
    for (let dy = 0; dy < 5 && full; dy++) for (let dx = 0; dx < 5; dx++) if (!dark[(y + dy) * w + x + dx]) { full = false; break; }
    if (full) blocks += 1;
  }
  return {items, blocks, width: w, height: h};
}"""


def test_upload_train_lab_and_a_second_session(server: str, browser, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(server)
    idle(page)
    assert page.locator("h1", has_text="Data").count() == 1
    assert page.locator("[data-testid='stException']").count() == 0

    # Upload a small CSV and save it as the current dataset.
    page.get_by_role("tab", name="Upload").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(tiny_file(tmp_path)))
    idle(page)
    page.get_by_text("Valid: 80 users").wait_for(timeout=30_000)
    page.get_by_role("button", name="Save and use this dataset").click()
    idle(page)
    assert "tiny ratings" in dataset_choice(page)

    # Start a tiny training run and watch the loss chart fill.
    open_page(page, "Train")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("2")
    epochs.press("Enter")
    idle(page)
    page.get_by_role("button", name="Start training").click()
    idle(page)
    chart = page.locator("[data-testid='stPlotlyChart']", has_text="L_meta")
    chart.first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"completed · \d+ steps")).wait_for(timeout=240_000)
    idle(page)
    assert page.get_by_text("Final metrics on held-out new users").count() == 1
    assert page.locator("[data-testid='stPlotlyChart'] .scatterlayer .trace").count() >= 2

    # The lab: three ratings on its star buttons, and the recommendations follow them.
    open_page(page, "Cold-start lab")
    lists = page.locator(".st-key-lab-recommendations")
    start = lists.text_content()
    assert metric(page, "your ratings") == "0"
    for n, stars in enumerate(("5★", "1★", "5★"), start=1):
        page.locator(".st-key-lab-rate").get_by_role("button", name=stars, exact=True).first.click()
        idle(page)
        assert metric(page, "your ratings") == str(n)
        assert page.locator("[data-testid='stException']").count() == 0
    assert lists.text_content() != start
    assert int(metric(page, "adapt + rank").split()[0]) < 1000
    # The map is one Vega canvas that keeps its place: a rating swaps its data in, it is never drawn afresh.
    canvas = page.locator(".st-key-lab-map canvas")
    assert canvas.count() == 1 and canvas.bounding_box()["height"] > 150
    assert page.locator(".st-key-lab-map .js-plotly-plot").count() == 0
    canvas.evaluate("(c) => { c.dataset.kept = 'yes'; }")
    page.locator(".st-key-lab-rate").get_by_role("button", name="2★", exact=True).first.click()
    idle(page)
    assert metric(page, "your ratings") == "4" and page.locator(".st-key-lab-map canvas[data-kept='yes']").count() == 1
    # On uploaded data the zoomed map holds the items nearest to the path and the path itself (a view fitted to the path
    # alone once showed no item at all).
    drawn = canvas.evaluate(MAP_PIXELS)
    assert drawn["items"] >= 100 and drawn["blocks"] >= 1, drawn
    shown = lists.locator("[class*='st-key-lab-list-']").count()  # this run and popularity (no other run on this dataset)
    assert shown == 2 and lists.locator("[data-testid='stText']").count() == 2 * shown  # two text columns each

    # A second browser context is a second session: default dataset, no lab ratings.
    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    other.goto(server)
    idle(other)
    assert "tiny ratings" not in dataset_choice(other)
    open_page(other, "Cold-start lab")
    assert other.locator("[data-testid='stMetric']", has_text="your ratings").count() == 0  # no run on its dataset yet
    other.context.close()
    context.close()


def test_a_servers_first_request_to_a_page_url_gets_that_page_inside_the_app(browser, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Before any session has run st.navigation, Streamlit would run a page file of pages/ on its own."""
    with streamlit_server(tmp_path_factory.mktemp("fresh-home")) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/learn")  # nothing has run on this server yet
        idle(page)
        assert page.url.rstrip("/").endswith("/learn")
        assert page.locator("h1").first.inner_text().startswith("Learn")
        nav = page.locator("[data-testid='stSidebarNav']")
        assert nav.get_by_text("Prepare").count() == 1 and nav.get_by_text("Cold-start lab").count() == 1  # the app's menu
        assert nav.locator("a", has_text=re.compile(r"^app$")).count() == 0  # not the pages-folder menu
        assert "MovieLens" in dataset_choice(page)  # the shared sidebar and its state
        page.locator("[data-testid='stSidebar']").get_by_text("简体中文").click()
        idle(page)
        open_page(page, "冷启动实验室")
        assert page.locator("h1", has_text="冷启动实验室").count() == 1  # the language stays from page to page
        assert page.locator("[data-testid='stException']").count() == 0
        page.close()


def test_a_junk_store_gets_its_message_and_is_recovered_from_the_browser(browser, tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("junk-home")
    (home / "store.sqlite3").write_bytes(b"junk\n")
    with streamlit_server(home) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        for path in ("", "train", "runs"):
            page.goto(f"{url}/{path}")
            idle(page)
            assert page.locator("[data-testid='stException']").count() == 0, path
            error = page.locator("[data-testid='stAlertContentError']")
            assert error.count() == 1 and "runs recover" in error.inner_text() and "Traceback" not in page.content(), path
            assert page.locator("h1", has_text="The run store cannot be opened").count() == 1, path
        page.get_by_role("button", name="Recover the store").click()
        idle(page)
        assert "The store was rebuilt from its folders" in page.locator("[data-testid='stAlertContentSuccess']").inner_text()
        assert page.locator("h1", has_text="Runs").count() == 1 and page.locator("[data-testid='stAlertContentError']").count() == 0
        assert [p.read_bytes() for p in home.glob("store.sqlite3.damaged-*")] == [b"junk\n"]
        page.close()
