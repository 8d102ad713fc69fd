"""The browser's own work per rating in the Cold-start lab: Chrome's main-thread durations and the DOM nodes replaced.

Serves the lab from ``--app-dir`` on a run store from ``benchmarks/lab_fixtures.py``
(as ``bench_lab_browser.py`` does), rates ``--ratings`` times (alternately 5★ and
2★ on the first item on offer) and prints, per rating and as medians:

- ``ScriptDuration``, ``RecalcStyleDuration``, ``LayoutDuration``, ``TaskDuration``
  (ms): the growth of Chrome's ``Performance.getMetrics`` counters over the
  rating, i.e. the time the page's main thread spent running scripts, styling,
  laying out and in tasks of any kind;
- ``added``: element nodes inserted into the page (a subtree counts all its
  elements): what React built anew rather than updated in place;
- ``lists``: the ``lists`` time of ``bench_lab_browser.py`` (ms from pointer-down).

Usage::

    python benchmarks/bench_lab_dom.py --home /tmp/labhome [--app-dir DIR] [--ratings 10] [--dataset "uploaded shop"]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lab_browser as lab  # noqa: E402  (the app, the probe and one rating)

METRICS = ("ScriptDuration", "RecalcStyleDuration", "LayoutDuration", "TaskDuration")
#: Counts the element nodes the page inserts (each inserted subtree with all its elements).
COUNT_ADDED = """(() => { const c = window.__added = {n: 0};
  new MutationObserver((records) => { for (const r of records) for (const n of r.addedNodes)
    if (n.nodeType === 1) c.n += 1 + n.querySelectorAll('*').length; })
  .observe(document.documentElement, {subtree: true, childList: true}); })()"""


async def measure(app_dir: Path, home: Path, n_ratings: int, dataset: str | None) -> list[dict[str, float]]:
    """One row per rating: the main thread's durations (ms), the element nodes added and the lists' time."""
    from playwright.async_api import async_playwright

    port = lab.free_port()
    server = lab.start_server(app_dir, home, port)
    rows = []
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=lab.CHROMIUM, args=lab.CHROMIUM_ARGS)
            context = await browser.new_context(viewport=lab.VIEWPORT)
            page = await lab.open_lab(context, f"http://localhost:{port}", dataset, "en")
            await page.evaluate(COUNT_ADDED)
            cdp = await context.new_cdp_session(page)
            await cdp.send("Performance.enable")

            async def counters() -> dict[str, float]:
                metrics = (await cdp.send("Performance.getMetrics"))["metrics"]
                values = {m["name"]: m["value"] for m in metrics}
                return {**{k: values[k] for k in METRICS}, "added": await page.evaluate("() => window.__added.n")}

            for n in range(n_ratings):
                before = await counters()
                timing = await lab.rate_once(page, n)
                after = await counters()
                row = {k: 1000 * (after[k] - before[k]) for k in METRICS}
                rows.append({**row, "added": after["added"] - before["added"], "lists": timing["lists_ms"]})
            await browser.close()
    finally:
        server.terminate()
        server.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a run store from benchmarks/lab_fixtures.py")
    parser.add_argument("--app-dir", type=Path, default=lab.REPO, help="the checkout whose app.py is served")
    parser.add_argument("--ratings", type=int, default=10)
    parser.add_argument("--dataset", default=None, help="sidebar dataset label to pick (default: the built-in default)")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.app_dir, args.home, args.ratings, args.dataset))
    keys = [*METRICS, "added", "lists"]
    for row in rows:
        print("  ".join(f"{k} {row[k]:.0f}" for k in keys))
    print("median  " + "  ".join(f"{k} {statistics.median(r[k] for r in rows):.0f}" for k in keys))
    print(lab.load())


if __name__ == "__main__":
    main()
