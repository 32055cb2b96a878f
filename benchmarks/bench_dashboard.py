"""How fast the dashboard answers, measured in a real browser.

Starts the real server (``rankscope dashboard RUN --no-browser --port N``) and,
with headless Chromium (Playwright driving /usr/bin/chromium), measures:

- cold: first Overview paint (straggler text visible) on a fresh server, the
  ingest cache already warm on disk (a second ``rankscope`` look at a run);
- warm: the Overview in a new browser session, the server's memory cache warm;
- page switch: clicking a sidebar link until the new page has painted;
- filter: changing the sidebar's rank filter until the Overview has repainted.

    .venv/bin/python benchmarks/bench_dashboard.py [RUN] [--repeat 3]

Targets (2 cores): Overview under 3 s warm, each interaction under 1 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _helpers() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_screenshots", REPO / "docs" / "make_screenshots.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    shots = _helpers()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default=str(shots.DEFAULT_RUN))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    run = Path(args.run)
    from playwright.sync_api import sync_playwright

    # Warm the on-disk ingest cache the way a user's earlier `rankscope report` would.
    subprocess.run(
        [sys.executable, "-m", "rankscope.dashboard.cli", "report", str(run)],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    from rankscope.dashboard.ingest.run import load_run

    ranks = sorted(load_run(run).ranks)
    port = shots.free_port()
    results: dict[str, list[float]] = {
        "cold overview: straggler visible": [],
        "cold overview: all charts": [],
        "warm overview: straggler visible": [],
        "warm overview: all charts": [],
        "page switch": [],
        "rank filter": [],
    }
    straggler = "is the straggler"
    with shots.start_server(run, port), sync_playwright() as p:
        browser = shots.launch_browser(p)
        url = f"http://127.0.0.1:{port}/"
        try:
            for i in range(args.repeat):
                page = browser.new_page(viewport={"width": 1500, "height": 1100})

                t = time.perf_counter()
                page.goto(url, timeout=120_000)
                page.get_by_text(straggler).first.wait_for(timeout=120_000)
                text_s = time.perf_counter() - t
                shots.wait_painted(page, straggler, timeout_ms=120_000)
                page.wait_for_selector(".js-plotly-plot", timeout=60_000)
                kind = "cold" if i == 0 else "warm"
                results[f"{kind} overview: straggler visible"].append(text_s)
                results[f"{kind} overview: all charts"].append(time.perf_counter() - t)

                def switch(page: Any = page) -> None:
                    page.get_by_role("link", name="Load imbalance").click()
                    shots.wait_painted(page, "Who arrived last", timeout_ms=60_000)
                    page.wait_for_selector(".js-plotly-plot", timeout=60_000)

                results["page switch"].append(_timed(switch))
                page.get_by_role("link", name="Overview").click()
                shots.wait_painted(page, straggler, timeout_ms=60_000)

                def rank_filter(page: Any = page) -> None:
                    # Remove the last rank from the sidebar's filter (many ranks: the
                    # picker starts empty, so pick one rank); the Overview repaints.
                    if len(ranks) > 16:
                        box = page.get_by_role("combobox").last
                        box.click()
                        box.fill(str(ranks[-1]))
                        page.keyboard.press("Enter")
                        shots.wait_painted(page, f"1 rank(s) of {len(ranks)}", timeout_ms=60_000)
                    else:
                        page.get_by_role("button", name=f"Remove {ranks[-1]}").click()
                        shots.wait_painted(page, f"{len(ranks) - 1} rank(s) of", timeout_ms=60_000)
                    page.wait_for_selector(".js-plotly-plot", timeout=60_000)

                results["rank filter"].append(_timed(rank_filter))
                page.close()
        finally:
            browser.close()
    print(f"bench_dashboard: {run.name}, {args.repeat} browser session(s)")
    for name, values in results.items():
        if values:
            print(
                f"  {name:34s} median {statistics.median(values):6.2f} s"
                f"   (all: {', '.join(f'{v:.2f}' for v in values)})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
