"""Benchmark of the Cold-start lab in a real browser: click a rating -> the top lists change, and the page settles.

Starts ``streamlit run app.py`` on a run store prepared by
``benchmarks/lab_fixtures.py`` (a meta + transfer run and a transfer-only run on
ML-100K and on an uploaded CSV), opens the lab in headless Chromium at
1440x900 and rates ~10 items one by one. For each rating it records, from the
click (browser clock):

- ``lists``: the first frame where the lab's top lists show a new ranking;
- ``settled``: the last change of the page (any DOM mutation) once the script
  run has finished and the page stayed quiet for a second.

Beside them, the app's own adapt + rank time (the lab's metric). The machine's
load (``uptime``) is written with the figures. Screenshots of the lab after 0,
1 and 3 ratings (``--shots DIR``) in English and Chinese.

Works on the lab before and after its redesign (a select box and a Rate
button then; item cards with star buttons now), so one script measures both::

    python benchmarks/lab_fixtures.py /tmp/labhome
    python benchmarks/bench_lab.py --home /tmp/labhome [--app-dir DIR] [--label after] [--ratings 10] [--shots DIR] [--json runs.jsonl]
    python benchmarks/bench_lab.py --report runs.jsonl   # writes benchmarks/results/lab.md
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
WATCH = """() => {
  window.__lastMutation = performance.now();
  new MutationObserver(() => { window.__lastMutation = performance.now(); })
    .observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app_dir: Path, home: Path, port: int) -> subprocess.Popen:
    from metarec_core.movielens import data_root

    env = dict(os.environ, METAREC_HOME=str(home), METAREC_DATA_DIR=str(data_root()))
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("streamlit did not start")


def idle(page, timeout: float = 120_000) -> None:
    page.wait_for_selector(IDLE, timeout=timeout)
    page.wait_for_timeout(400)
    page.wait_for_selector(IDLE, timeout=timeout)


def settle(page, quiet_ms: float = 1000, timeout_s: float = 30) -> float:
    """Wait until the script is idle and no DOM change happened for ``quiet_ms``; the time of the last change."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
        now, last = page.evaluate("() => [performance.now(), window.__lastMutation]")
        if now - last >= quiet_ms and page.locator(IDLE).count():
            return last
        page.wait_for_timeout(max(50, quiet_ms - (now - last)))
    raise TimeoutError("the page did not settle")


def lists_selector(page) -> str:
    """The lab's top lists: the keyed container (redesigned lab) or the first table (before)."""
    return ".st-key-lab-recommendations" if page.locator(".st-key-lab-recommendations").count() else "[data-testid='stTable']"


def metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']", has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip() if box.count() else ""


def rate_once(page, n: int) -> dict:
    """One rating (alternately 5 and 2 stars) of the first item on offer; timings from the click."""
    stars = "5★" if n % 2 == 0 else "2★"
    sel = lists_selector(page)
    before = page.evaluate("(s) => Array.from(document.querySelectorAll(s)).map(e => e.textContent).join('|')", sel)
    if page.locator(".st-key-lab-rate").count():
        button = page.locator(".st-key-lab-rate").get_by_role("button", name=stars, exact=True).first
    else:
        page.get_by_role("radio", name=stars, exact=True).click()
        idle(page)
        page.evaluate(WATCH)
        button = page.get_by_role("button", name="Rate", exact=True)
    button.wait_for()
    t0 = page.evaluate("() => performance.now()")
    button.click()
    changed = page.wait_for_function(
        "([s, prev]) => { const now = Array.from(document.querySelectorAll(s)).map(e => e.textContent).join('|');"
        " return now !== prev && performance.now(); }", arg=[sel, before], polling="raf", timeout=30_000,
    ).json_value()
    last = settle(page)
    return {"lists_ms": changed - t0, "settled_ms": max(last, changed) - t0, "app_ms": metric(page, "adapt + rank")}


def screenshot(page, folder: Path | None, name: str) -> None:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"))


def open_lab(page, url: str, dataset: str | None, lang: str) -> None:
    page.goto(url)
    idle(page)
    if lang == "zh":
        page.locator("[data-testid='stSidebar']").get_by_text("简体中文").click()
        idle(page)
    if dataset:
        box = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first
        box.click()
        page.get_by_role("option", name=dataset).first.click()
        idle(page)
    nav = "冷启动实验室" if lang == "zh" else "Cold-start lab"
    page.locator("[data-testid='stSidebarNav'] a", has_text=nav).first.click()
    idle(page)
    page.evaluate(WATCH)
    settle(page)


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def write_markdown(lines_file: Path, out: Path) -> None:
    """``benchmarks/results/lab.md`` from the JSON lines of one or more runs of this script."""
    runs = [json.loads(line) for line in lines_file.read_text().splitlines() if line.strip()]
    rows = ["| lab | data | ratings | lists change: median / p95 / max (ms) | page settled: median / p95 / max (ms) | app's adapt + rank (ms), median | load before → after |",
            "|---|---|---|---|---|---|---|"]
    for r in runs:
        app = [float(x["app_ms"].split()[0]) for x in r["ratings"] if x["app_ms"]]
        fmt = lambda s: f"{s['median']:.0f} / {s['p95']:.0f} / {s['max']:.0f}"  # noqa: E731
        load_of = lambda text: text.split("load average:")[-1].strip()  # noqa: E731
        rows.append(f"| {r['label']} | {r['data']} | {len(r['ratings'])} | {fmt(r['lists_ms'])} | {fmt(r['settled_ms'])} | "
                    f"{np.median(app) if app else float('nan'):.0f} | {load_of(r['load_before'])} → {load_of(r['load_after'])} |")
    text = "\n".join([
        "# Cold-start lab in a browser: a rating, until the lists change and the page settles",
        "",
        "`python benchmarks/bench_lab.py --home HOME [--app-dir DIR] --label L --json runs.jsonl`, run stores from "
        "`python benchmarks/lab_fixtures.py HOME` (3-epoch runs: meta + transfer and transfer only, on ML-100K and on a "
        "60-item uploaded CSV). Headless Chromium at 1440×900, one session, alternately 5★ and 2★ on the first item on offer. "
        "*Lists change*: from the click to the first frame where the top lists show a new ranking; *settled*: to the last DOM "
        "change once the script run has finished and the page stayed quiet for 1 s. The app's own adapt + rank is the lab's metric. "
        "`before` is the lab as it was (a select box, a Rate button, a whole-page rerun twice per rating), `after` is this one, "
        "measured one after the other on the same machine: compare them as ratios within one table; the machine (2 cores) was "
        "shared with other jobs, its load averages are in the last column.",
        "",
        *rows,
        "",
    ])
    out.write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a run store from benchmarks/lab_fixtures.py")
    parser.add_argument("--app-dir", type=Path, default=REPO, help="the checkout whose app.py is served")
    parser.add_argument("--label", default="after")
    parser.add_argument("--ratings", type=int, default=10)
    parser.add_argument("--dataset", default=None, help="sidebar dataset label to pick (default: the built-in default)")
    parser.add_argument("--shots", type=Path, default=None, help="write screenshots after 0, 1, 3 ratings (EN and 中文) here")
    parser.add_argument("--json", type=Path, default=None, help="append this run's figures to a JSON lines file")
    parser.add_argument("--report", type=Path, default=None, help="only write benchmarks/results/lab.md from this JSON lines file")
    args = parser.parse_args()
    if args.report is not None:
        write_markdown(args.report, RESULTS / "lab.md")
        return
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start_server(args.app_dir, args.home, port)
    url = f"http://127.0.0.1:{port}"
    tag = "upload" if args.dataset else "builtin"
    out: dict = {"label": args.label, "data": args.dataset or "ML-100K (default)", "load_before": load()}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            open_lab(page, url, args.dataset, "en")
            screenshot(page, args.shots, f"lab_{tag}_en_0")
            rows = []
            for n in range(args.ratings):
                rows.append(rate_once(page, n))
                if n + 1 in (1, 3):
                    screenshot(page, args.shots, f"lab_{tag}_en_{n + 1}")
            out["ratings"] = rows
            out["lists_ms"] = summary([r["lists_ms"] for r in rows])
            out["settled_ms"] = summary([r["settled_ms"] for r in rows])
            if args.shots is not None:
                zh = browser.new_page(viewport={"width": 1440, "height": 900})
                open_lab(zh, url, args.dataset, "zh")
                screenshot(zh, args.shots, f"lab_{tag}_zh_0")
                for n in range(3):
                    rate_once(zh, n)
                    if n + 1 in (1, 3):
                        screenshot(zh, args.shots, f"lab_{tag}_zh_{n + 1}")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    out["load_after"] = load()
    print(json.dumps({k: v for k, v in out.items() if k != "ratings"}, indent=1))
    print("app's adapt + rank:", [r["app_ms"] for r in out["ratings"]])
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
