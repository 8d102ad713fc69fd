"""Take the README's screenshots of every page from the real app in headless chromium.

Usage::

    METAREC_HOME=/path/to/a/store/with/a/trained/run python assets/make_screenshots.py [--lang en|zh] [--out assets/screenshots]

The store should hold a completed run on MovieLens-100K (and, for the lab's
comparison column, a transfer-only run; for the Runs page's shots curve, an
evaluation made on that page). The app is started with ``streamlit run`` on a
free port and stopped at the end.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
PAGES = ("data", "train", "runs", "embeddings", "recommendations", "lab", "learn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, *, app_dir: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``streamlit run app.py`` of ``app_dir`` on ``port`` (environment ``env``, default this one's); returns once the server answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ) if env is None else env,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("streamlit did not start within 60 s")


def settle(page, extra_ms: int = 1500) -> None:
    """Wait until the script run is over and charts have drawn."""
    page.wait_for_selector(IDLE, timeout=120_000)
    page.wait_for_timeout(extra_ms)
    page.wait_for_selector(IDLE, timeout=120_000)


def shrink(path: Path) -> None:
    """Re-save a screenshot with a 256-colour palette (about 2.5x smaller; text stays sharp)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", choices=("en", "zh"), default="en")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshots")
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--run-name", help="pick this run in the sidebar (default: the newest completed run)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    app = start_app(port)
    suffix = "" if args.lang == "en" else "-zh"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
            page.goto(f"http://127.0.0.1:{port}/")
            settle(page, 3000)
            if args.lang == "zh":
                page.locator("[data-testid='stSidebar']").get_by_text("简体中文").click()
                settle(page)
            if args.run_name:
                page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").nth(1).click()
                page.get_by_role("option", name=args.run_name).first.click()
                settle(page)
            links = page.locator("[data-testid='stSidebarNav'] a")
            for name in args.pages.split(","):
                links.nth(PAGES.index(name)).click()  # one session throughout: language and choices stay
                settle(page, 3000)
                if name == "embeddings" and args.lang == "en":  # a search shows the neighbours of a well-known movie
                    box = page.locator("[data-testid='stTextInput'] input").first
                    box.fill("Star Wars")
                    box.press("Enter")
                    settle(page, 2000)
                if name == "lab":
                    for stars in ("5★", "2★", "4★"):  # rate three of the movies it asks about first
                        page.locator(".st-key-lab-rate").get_by_role("button", name=stars, exact=True).first.click()
                        settle(page, 800)
                    settle(page, 2500)
                # Streamlit scrolls inside its main container: grow the window to the content, then shoot.
                height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                page.set_viewport_size({"width": 1440, "height": min(int(height) + 40, 9000)})
                settle(page, 1500)
                path = args.out / f"{name}{suffix}.png"
                page.screenshot(path=str(path))
                shrink(path)
                page.set_viewport_size({"width": 1440, "height": 1000})
                print(path)
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
