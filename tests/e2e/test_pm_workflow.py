"""A product manager's day in a real browser: a log with other column names and a product table in, three runs compared, recommendations out.

Screenshots of every step in English and 中文 go to ``$METAREC_E2E_SHOTS`` (default: the test's temporary folder).
"""
from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec_core.synthetic import SyntheticConfig, make_synthetic
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, idle, open_page, streamlit_server

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1440, "height": 900}
#: Three short runs: (name, preset pill or None, epochs).
RUNS = (("pm default", None, 2), ("pm longer", None, 4), ("pm transfer only", "Transfer only (λ1 = 0)", 2))


def pm_files(folder: Path) -> tuple[Path, Path]:
    """``orders.csv`` (6,000 rows ``customer,sku,stars,ts``) and ``products.csv`` (``sku,product_name,category``)."""
    data = make_synthetic(SyntheticConfig(n_users=400, n_items=300, ratings_per_user=(10, 22), seed=7)).dataset
    r = data.ratings.sample(n=6000, random_state=0)
    orders = folder / "orders.csv"
    pd.DataFrame({
        "customer": [f"C{int(u):04d}" for u in r["user"]], "sku": [f"SKU-{int(i):04d}" for i in r["item"]],
        "stars": r["rating"].astype(int), "ts": r["timestamp"].astype(np.int64),
    }).to_csv(orders, index=False)
    adjectives = ("Red", "Blue", "Green", "Steel", "Oak", "Linen", "Glass", "Wool")
    nouns = ("mug", "lamp", "chair", "pen", "scarf", "bowl", "kettle", "notebook", "rug", "vase")
    products = folder / "products.csv"
    pd.DataFrame({
        "sku": [f"SKU-{i:04d}" for i in range(300)],
        "product_name": [f"{adjectives[i % 8]} {nouns[(i // 8) % 10]} no. {i}" for i in range(300)],
        "category": [("kitchen", "office", "home", "textiles")[i % 4] for i in range(300)],
    }).to_csv(products, index=False)
    return orders, products


class Shots:
    """Screenshots at 1440 px wide, tall enough for the whole page (Streamlit scrolls inside its own container)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, page, name: str, height: int = 2400) -> None:
        page.set_viewport_size({"width": 1440, "height": height})
        page.wait_for_timeout(700)
        page.screenshot(path=str(self.folder / f"{name}.png"))
        page.set_viewport_size(VIEWPORT)


def select_value(page, label: str) -> str:
    return page.get_by_role("combobox", name=label, exact=True).first.input_value()


def upload(page, orders: Path, products: Path, *, tab: str, side: str) -> None:
    page.get_by_role("tab", name=tab).click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(orders))
    idle(page)
    page.locator("[data-testid='stExpander']", has_text=side).first.locator("summary").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").nth(2).set_input_files(str(products))
    idle(page)


def test_a_product_managers_log_maps_in_runs_compare_and_recommendations_go_out(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
    orders, products = pm_files(tmp_path)
    shots = Shots(Path(os.environ.get("METAREC_E2E_SHOTS", tmp_path / "shots")))
    home = tmp_path / "home"
    home.mkdir()
    with streamlit_server(home) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
        page.goto(url)
        idle(page)

        # 1. Upload and map: every column is guessed, nothing to touch.
        upload(page, orders, products, tab="Upload", side="Optional")
        assert [select_value(page, f"{role} column") for role in ("user ID", "item ID", "rating", "timestamp")] == ["customer", "sku", "stars", "ts"]
        assert select_value(page, "item name column") == "product_name"
        page.get_by_text("Valid: 400 users, 300 items, 6,000 ratings").wait_for(timeout=30_000)
        assert page.locator("[data-testid='stAlertContentError']").count() == 0  # no stale detection error beside it
        shots.take(page, "1-data-upload-en")
        page.get_by_role("button", name="Save and use this dataset").click()
        idle(page)

        # 2. Three short runs from the Train page, queued one after the other.
        from metarec_core import jobs
        from metarec_core.store import RunStore

        store = RunStore(home)
        open_page(page, "Train")
        for n, (name, preset, epochs) in enumerate(RUNS, start=1):
            if preset:
                # While a run trains, its live progress reruns the page every second and can swallow a click: wait for the queue.
                for record in store.list_runs():
                    jobs.wait(store, record.id, timeout=600)
                page.wait_for_timeout(3000)  # the progress notices the end and refreshes the page once
                idle(page)
                page.locator("[data-testid='stButtonGroup'] button", has_text=preset).first.click()
                idle(page)
                assert page.locator("[data-testid='stSlider']").first.inner_text().split()[-3] == "0.00"  # λ1 = 0
            box = page.get_by_label("Epochs", exact=True)
            box.fill(str(epochs))
            box.press("Enter")
            idle(page)
            field = page.get_by_label("Run name")
            field.fill(name)
            field.press("Enter")  # committed before the click (the live progress reruns the page every second)
            idle(page)
            page.get_by_role("button", name="Start training").click()
            idle(page)
            deadline = time.time() + 30
            while len(store.list_runs()) < n and time.time() < deadline:
                time.sleep(0.5)
            newest = store.list_runs()[0]
            assert newest.dataset_ref != "builtin:movielens-100k"
            assert newest.name == name and newest.config["num_epochs"] == epochs
            assert (newest.config["lambda_meta"] == 0) == (preset is not None)  # the preset reached the run
        shots.take(page, "2-train-en")
        ids = [r.id for r in store.list_runs()]
        for run_id in ids:
            record = jobs.wait(store, run_id, timeout=600)
            assert record.status == "completed", record.error

        # 3. Compare: baselines beside the final metrics without evaluating, the best run marked.
        open_page(page, "Runs")
        idle(page)
        select = page.get_by_role("combobox", name="Runs to compare")
        select.wait_for(timeout=120_000)  # the run table and the baselines are read first
        for name, _, _ in RUNS:
            if page.locator("[data-baseweb='tag']", has_text=name).count() == 0:
                select.click()
                page.keyboard.type(name)
                page.keyboard.press("Enter")
                idle(page)
        page.keyboard.press("Escape")
        page.locator("h1").first.click()  # close the dropdown
        idle(page)
        body = page.locator("[data-testid='stMain']").inner_text()
        assert "Best (bold, green)" in body
        page.get_by_text("ALS + fold-in").first.wait_for(state="attached", timeout=30_000)
        shots.take(page, "3-runs-en", height=4200)

        # 4. Recommendations of the best run by MAE, downloaded as CSV: names, not IDs twice.
        final = {r.id: store.final_metrics(r.id)["test_mae"] for r in store.list_runs() if r.id in ids}
        best = min(final, key=final.get)
        # The best run becomes the dataset's default, and a new session opens on it (no run to pick by hand).
        from metarec_core.default_runs import pin_default_run

        pin_default_run(store, best)
        page.context.close()
        page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
        page.goto(url)
        idle(page)
        sidebar = page.locator("[data-testid='stSidebar']")
        sidebar.get_by_role("combobox", name="Dataset").click()
        page.get_by_role("option", name=re.compile("orders")).first.click()
        idle(page)
        picked = sidebar.get_by_role("combobox").nth(1)
        assert store.get_run(best).name in sidebar.inner_text() + picked.input_value()  # the session opened on the default run
        open_page(page, "Recommendations")
        assert page.get_by_text("Red ").count() + page.get_by_text("Blue ").count() > 0 or "no." in page.locator("[data-testid='stMain']").inner_text()
        with page.expect_download() as one:
            page.get_by_role("button", name="Download this list (CSV)").click()
        listed = pd.read_csv(one.value.path())
        assert list(listed.columns) == ["user_id", "rank", "item_id", "name", "score"] and listed["name"].str.contains("no.").all()
        page.get_by_role("button", name=re.compile("Prepare the top")).click()
        idle(page)
        with page.expect_download() as many:
            page.get_by_role("button", name=re.compile("Download the lists of all")).click()
        everyone = pd.read_csv(io.BytesIO(Path(many.value.path()).read_bytes()))
        assert everyone["user_id"].nunique() > 20 and (everyone.groupby("user_id")["rank"].min() == 1).all()
        shots.take(page, "4-recommendations-en")
        for name in ("Embeddings", "Cold-start lab", "Data"):
            open_page(page, name)
            shots.take(page, f"5-{name.split()[0].lower()}-en")

        # 5. The same pages in 中文: no raw keys, no error boxes.
        sidebar.get_by_text("简体中文").click()
        idle(page)
        upload(page, orders, products, tab="上传", side="可选")
        page.get_by_text("有效：400 个用户").wait_for(timeout=30_000)
        shots.take(page, "1-data-upload-zh")
        for name, shot in (("训练", "2-train-zh"), ("运行记录", "3-runs-zh"), ("推荐", "4-recommendations-zh"),
                           ("嵌入", "5-embeddings-zh"), ("冷启动实验室", "5-cold-start-zh")):
            open_page(page, name)
            text = page.locator("[data-testid='stMain']").inner_text()
            for raw in ("test_mae", "best_epoch", "valid_ndcg@3", "global-mean", "lambda_meta"):
                assert raw not in text, (name, raw)
            assert page.locator("[data-testid='stException']").count() == 0, name
            shots.take(page, shot, height=4200 if shot.startswith("3") else 2400)
        browser.close()
