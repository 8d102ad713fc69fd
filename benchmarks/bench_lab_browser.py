"""Benchmark of the Cold-start lab in a real browser: pointer down on a star -> the three top lists show the new ranking, -> the page settles.

Starts ``streamlit run app.py`` on a run store prepared by
``benchmarks/lab_fixtures.py`` (a meta + transfer run and a transfer-only run on
ML-100K and on an uploaded CSV), opens the lab in headless Chromium at
1440x900 and rates items one by one (alternately 5★ and 2★ on the first item on
offer). Every time is on the page's own clock (``performance.now()``), from the
``pointerdown`` event of the click on the star:

- ``lists``: the animation frame after the DOM mutation that put the three top
  lists (``st.container`` key ``lab-recommendations``) in their final state of
  this rating (the text they hold once the page has settled);
- ``settled``: the animation frame after the page's last DOM mutation, once the
  script run has finished and the page stayed quiet for a second;
- ``script``: until the app's script-state attribute says the run has finished
  (the server's fragment rerun plus the browser's handling of its messages);
- per rating, the bytes and messages the websocket received, the WebGL
  contexts created (a re-mounted Plotly ``scattergl`` map creates new ones) and
  the long tasks (main thread busy > 50 ms) in the browser.

``--sessions 3`` also measures three browser contexts (three sessions of the
same server) one after the other and then rating all at once; each session's
median and p95 are compared with its own time alone. The machine's load
(``uptime``) is written with the figures. ``--shots DIR``: screenshots after 0,
1 and 3 ratings in English and Chinese.

Usage::

    python benchmarks/lab_fixtures.py /tmp/labhome
    python benchmarks/bench_lab_browser.py --home /tmp/labhome [--app-dir DIR] [--label after] [--ratings 10] \\
        [--sessions 3] [--shots DIR] [--json runs.jsonl]
    python benchmarks/bench_lab_browser.py --report runs.jsonl   # writes benchmarks/results/lab.md
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "assets"))
from make_screenshots import free_port, start_app  # noqa: E402  (assets/make_screenshots.py: the app on a free port)

RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1440, "height": 900}
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
LISTS = ".st-key-lab-recommendations"
#: Installed before the app's own scripts: the clock marks of every rating.
PROBE = """(() => {
  const lab = window.__lab = {down: [], sends: [], msgs: [], gl: 0, long: [], lists: [], last: 0, finished: []};
  document.addEventListener('pointerdown', () => lab.down.push(performance.now()), true);
  const WS = window.WebSocket;
  function Probed(...args) {
    const ws = new WS(...args);
    ws.addEventListener('message', (ev) => {
      const d = ev.data; lab.msgs.push([performance.now(), d.byteLength ?? d.size ?? d.length ?? 0]);
    });
    const send = ws.send.bind(ws);
    ws.send = (d) => { lab.sends.push(performance.now()); return send(d); };
    return ws;
  }
  Probed.prototype = WS.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Probed[k] = WS[k];
  window.WebSocket = Probed;
  const createElement = Document.prototype.createElement;
  lab.canvases = 0;
  Document.prototype.createElement = function (name, ...rest) {
    if (String(name).toLowerCase() === 'canvas') lab.canvases += 1;
    return createElement.call(this, name, ...rest);
  };
  const getContext = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (type, ...rest) {
    if (/webgl/.test(String(type)) && !this.__probed) { this.__probed = true; lab.gl += 1; }
    return getContext.call(this, type, ...rest);
  };
  try {
    new PerformanceObserver((l) => { for (const e of l.getEntries()) lab.long.push([e.startTime, e.duration]); })
      .observe({type: 'longtask', buffered: true});
  } catch (e) {}
  const text = () => { const el = document.querySelector('.st-key-lab-recommendations'); return el ? el.textContent : null; };
  let shown = null;
  const watch = () => {
    new MutationObserver(() => {
      const now = performance.now(); lab.last = now;
      const t = text();
      if (t !== shown) { shown = t; requestAnimationFrame(() => lab.lists.push([now, performance.now(), t])); }
      const app = document.querySelector("[data-testid='stApp']");
      const state = app && app.getAttribute('data-test-script-state');
      if (state !== lab.state) { lab.state = state; if (state === 'notRunning') lab.finished.push(now); }
      requestAnimationFrame(() => { if (lab.last === now) lab.lastFrame = performance.now(); });
    }).observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
  };
  if (document.documentElement) watch(); else document.addEventListener('DOMContentLoaded', watch);
})()"""


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start_server(app_dir: Path, home: Path, port: int) -> subprocess.Popen:
    """The lab's app from ``app_dir`` on ``port`` with the run store ``home`` (and this checkout's data cache)."""
    from metarec_core.movielens import data_root

    try:
        return start_app(port, app_dir=app_dir, env=dict(os.environ, METAREC_HOME=str(home), METAREC_DATA_DIR=str(data_root())))
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc


async def idle(page, timeout: float = 120_000) -> None:
    await page.wait_for_selector(IDLE, timeout=timeout)
    await page.wait_for_timeout(400)
    await page.wait_for_selector(IDLE, timeout=timeout)


async def settle(page, quiet_ms: float = 1000, timeout_s: float = 60) -> None:
    """Wait until the script is idle and no DOM change happened for ``quiet_ms``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        await page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
        now, last = await page.evaluate("() => [performance.now(), window.__lab.last]")
        if now - last >= quiet_ms and await page.locator(IDLE).count():
            return
        await page.wait_for_timeout(max(50, quiet_ms - (now - last)))
    raise TimeoutError("the page did not settle")


async def metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']", has_text=label).first
    return (await box.locator("[data-testid='stMetricValue']").inner_text()).strip() if await box.count() else ""


async def rate_once(page, n: int) -> dict:
    """One rating (alternately 5 and 2 stars) of the first item on offer; times from its pointerdown."""
    stars = "5★" if n % 2 == 0 else "2★"
    button = page.locator(".st-key-lab-rate").get_by_role("button", name=stars, exact=True).first
    await button.wait_for()
    mark = await page.evaluate("() => { const l = window.__lab; return {down: l.down.length, msgs: l.msgs.length, gl: l.gl, canvases: l.canvases,"
                               " lists: l.lists.length, finished: l.finished.length, before: l.lists.length ? l.lists[l.lists.length - 1][2] : null}; }")
    for attempt in range(3):  # a button the page replaced between finding and clicking it: find it again
        try:
            await button.click(timeout=10_000)
            break
        except Exception:
            if attempt == 2 or await page.evaluate("() => window.__lab.down.length") > mark["down"]:
                raise
            await settle(page)
    await page.wait_for_function(f"() => window.__lab.finished.length > {mark['finished']}", polling=50, timeout=60_000)
    await settle(page)
    lab = await page.evaluate("() => window.__lab")
    down = lab["down"][mark["down"]]
    final = lab["lists"][-1][2] if lab["lists"] else None
    # The first frame from which the lists hold their final text (and keep it).
    lists_at = None
    for _, frame, text in reversed(lab["lists"][mark["lists"]:]):
        if text != final:
            break
        lists_at = frame
    msgs = [m for m in lab["msgs"] if m[0] >= down]
    long = [d for s, d in lab["long"] if s + d >= down]
    finished = [f for f in lab["finished"] if f >= down]
    return {
        "lists_ms": (lists_at - down) if lists_at is not None else float("nan"),
        "lists_changed": final != mark["before"],
        "settled_ms": max(lab.get("lastFrame") or lab["last"], lists_at or 0) - down,
        "script_ms": (finished[0] - down) if finished else float("nan"),
        "first_msg_ms": (msgs[0][0] - down) if msgs else float("nan"),
        "last_msg_ms": (msgs[-1][0] - down) if msgs else float("nan"),
        "bytes": int(sum(m[1] for m in msgs)), "messages": len(msgs),
        "webgl_contexts": lab["gl"] - mark["gl"], "canvases": lab["canvases"] - mark["canvases"], "long_tasks_ms": float(sum(long)),
        "app_ms": await metric(page, "adapt + rank"),
    }


async def screenshot(page, folder: Path | None, name: str) -> None:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(folder / f"{name}.png"))


async def open_lab(context, url: str, dataset: str | None, lang: str):
    page = await context.new_page()
    await page.add_init_script(PROBE)
    await page.goto(url)
    await idle(page)
    if lang == "zh":
        await page.locator("[data-testid='stSidebar']").get_by_text("简体中文").click()
        await idle(page)
    if dataset:
        box = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first
        await box.click()
        await page.get_by_role("option", name=dataset).first.click()
        await idle(page)
    nav = "冷启动实验室" if lang == "zh" else "Cold-start lab"
    await page.locator("[data-testid='stSidebarNav'] a", has_text=nav).first.click()
    await idle(page)
    await settle(page)
    return page


async def reset(page) -> None:
    """Forget the lab user's ratings (the lab's reset button), so each series starts from no ratings."""
    button = page.locator("[class*='st-key-lab_reset'] button, .st-key-lab_reset button").first
    if not await button.count():
        button = page.get_by_role("button", name="Reset", exact=False).first
    await button.click()
    await settle(page)


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x == x], dtype=float)
    if not len(v):
        return {"median": float("nan"), "p95": float("nan"), "max": float("nan")}
    return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def series(rows: list[dict]) -> dict:
    """Summaries of one series of ratings."""
    out = {key: summary([r[key] for r in rows]) for key in ("lists_ms", "settled_ms", "script_ms", "first_msg_ms", "long_tasks_ms")}
    out["bytes_median"] = float(np.median([r["bytes"] for r in rows]))
    out["webgl_per_rating"] = float(np.mean([r["webgl_contexts"] for r in rows]))
    out["n"] = len(rows)
    return out


async def rate_series(page, n_ratings: int) -> list[dict]:
    return [await rate_once(page, n) for n in range(n_ratings)]


async def measure(args: argparse.Namespace, url: str) -> dict:
    from playwright.async_api import async_playwright

    tag = "upload" if args.dataset else "builtin"
    out: dict = {"label": args.label, "data": args.dataset or "ML-100K (default)", "load_before": load()}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport=VIEWPORT)
        page = await open_lab(context, url, args.dataset, "en")
        await screenshot(page, args.shots, f"lab_{tag}_en_0")
        rows = []
        for n in range(args.ratings):
            rows.append(await rate_once(page, n))
            if n + 1 in (1, 3):
                await screenshot(page, args.shots, f"lab_{tag}_en_{n + 1}")
        out["ratings"] = rows
        out["single"] = series(rows)
        out["load_single"] = load()
        if args.shots is not None:
            zh = await open_lab(await browser.new_context(viewport=VIEWPORT), url, args.dataset, "zh")
            await screenshot(zh, args.shots, f"lab_{tag}_zh_0")
            for n in range(3):
                await rate_once(zh, n)
                if n + 1 in (1, 3):
                    await screenshot(zh, args.shots, f"lab_{tag}_zh_{n + 1}")
            await zh.context.close()
        if args.sessions > 1:
            pages = [page] + [await open_lab(await browser.new_context(viewport=VIEWPORT), url, args.dataset, "en")
                              for _ in range(args.sessions - 1)]
            alone = []
            for other in pages:  # each session on its own, from no ratings
                await reset(other)
                alone.append(await rate_series(other, args.ratings))
            for other in pages:
                await reset(other)
            out["load_alone"] = load()
            together = await asyncio.gather(*(rate_series(other, args.ratings) for other in pages))
            out["load_together"] = load()
            out["sessions"] = [{"alone": series(a), "together": series(b), "alone_ratings": a, "together_ratings": b}
                               for a, b in zip(alone, together)]
        await browser.close()
    out["load_after"] = load()
    return out


def fmt(s: dict) -> str:
    return f"{s['median']:.0f} / {s['p95']:.0f} / {s['max']:.0f}"


def load_of(text: str) -> str:
    return text.split("load average:")[-1].strip()


def write_markdown(lines_file: Path, out: Path, notes: Path | None = None) -> None:
    """``benchmarks/results/lab.md`` from the JSON lines of one or more runs of this script."""
    runs = [json.loads(line) for line in lines_file.read_text().splitlines() if line.strip()]
    rows = ["| lab | data | ratings | lists show the new ranking: median / p95 / max (ms) | page settled: median / p95 / max (ms) "
            "| script run over (ms), median | received per rating (KB), median | WebGL contexts per rating | browser long tasks per rating (ms), median "
            "| app's adapt + rank (ms), median | load before → after |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["single"]
        app = [float(x["app_ms"].split()[0]) for x in r["ratings"] if x["app_ms"]]
        rows.append(f"| {r['label']} | {r['data']} | {s['n']} | {fmt(s['lists_ms'])} | {fmt(s['settled_ms'])} | {s['script_ms']['median']:.0f} "
                    f"| {s['bytes_median'] / 1024:.0f} | {s['webgl_per_rating']:.1f} | {s['long_tasks_ms']['median']:.0f} "
                    f"| {np.median(app) if app else float('nan'):.0f} | {load_of(r['load_before'])} → {load_of(r['load_single'])} |")
    multi = ["| lab | data | session | alone: lists median / p95 (ms) | together: lists median / p95 (ms) | ratio (median / p95) "
             "| alone: settled median / p95 (ms) | together: settled median / p95 (ms) | ratio (median / p95) | load alone → together |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for k, s in enumerate(r.get("sessions", []), start=1):
            a, b = s["alone"], s["together"]
            ratio = lambda key: f"{b[key]['median'] / a[key]['median']:.2f} / {b[key]['p95'] / a[key]['p95']:.2f}"  # noqa: E731
            multi.append(f"| {r['label']} | {r['data']} | {k} | {a['lists_ms']['median']:.0f} / {a['lists_ms']['p95']:.0f} "
                         f"| {b['lists_ms']['median']:.0f} / {b['lists_ms']['p95']:.0f} | {ratio('lists_ms')} "
                         f"| {a['settled_ms']['median']:.0f} / {a['settled_ms']['p95']:.0f} | {b['settled_ms']['median']:.0f} / {b['settled_ms']['p95']:.0f} "
                         f"| {ratio('settled_ms')} | {load_of(r['load_alone'])} → {load_of(r['load_together'])} |")
    text = "\n".join([
        "# Cold-start lab in a browser: pointer down on a star, until the lists show the new ranking and the page settles",
        "",
        "`python benchmarks/bench_lab_browser.py --home HOME [--app-dir DIR] --label L --sessions 3 --json runs.jsonl`, run stores from "
        "`python benchmarks/lab_fixtures.py HOME` (3-epoch runs: meta + transfer and transfer only, on ML-100K and on a "
        "60-item uploaded CSV). Headless Chromium at 1440×900, alternately 5★ and 2★ on the first item on offer. Every time is on "
        "the page's clock from the `pointerdown` of the click. *Lists*: to the animation frame after the DOM mutation that gave the "
        "three top lists (`lab-recommendations`) the text they hold once the page has settled; *settled*: to the frame after the "
        "page's last DOM mutation, once the script run is over and the page stayed quiet for 1 s; *script run over*: until the app "
        "says its run has finished. *Received*: websocket bytes per rating; *WebGL contexts*: created per rating (a re-mounted "
        "Plotly WebGL map makes new ones); *long tasks*: the browser's main thread busy for more than 50 ms at a time.",
        "",
        *rows,
        "",
        "Several sessions: three browser contexts of one browser on one server, first each alone, then all three rating at once "
        "(the same number of ratings each, from no ratings).",
        "",
        *(multi if len(multi) > 2 else []),
        "",
    ])
    if notes is not None and notes.exists():
        text += "\n" + notes.read_text()
    out.write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a run store from benchmarks/lab_fixtures.py")
    parser.add_argument("--app-dir", type=Path, default=REPO, help="the checkout whose app.py is served")
    parser.add_argument("--label", default="after")
    parser.add_argument("--ratings", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=1, help="also measure this many sessions alone, then rating at once")
    parser.add_argument("--dataset", default=None, help="sidebar dataset label to pick (default: the built-in default)")
    parser.add_argument("--shots", type=Path, default=None, help="write screenshots after 0, 1, 3 ratings (EN and 中文) here")
    parser.add_argument("--json", type=Path, default=None, help="append this run's figures to a JSON lines file")
    parser.add_argument("--report", type=Path, default=None, help="only write benchmarks/results/lab.md from this JSON lines file")
    parser.add_argument("--notes", type=Path, default=None, help="with --report: a Markdown file appended to the report")
    args = parser.parse_args()
    if args.report is not None:
        write_markdown(args.report, RESULTS / "lab.md", args.notes)
        return
    port = free_port()
    server = start_server(args.app_dir, args.home, port)
    try:
        out = asyncio.run(measure(args, f"http://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(timeout=20)
    show = {k: v for k, v in out.items() if k not in ("ratings", "sessions")}
    print(json.dumps(show, indent=1))
    for r in out["ratings"]:
        print({k: (round(v) if isinstance(v, float) else v) for k, v in r.items()})
    for k, s in enumerate(out.get("sessions", []), start=1):
        print(f"session {k}: alone lists {fmt(s['alone']['lists_ms'])}, together {fmt(s['together']['lists_ms'])}; "
              f"settled alone {fmt(s['alone']['settled_ms'])}, together {fmt(s['together']['settled_ms'])}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
