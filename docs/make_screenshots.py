"""Screenshots of every dashboard page, for the README: ``docs/screenshots/<page>.png``.

Starts the real server (``rankscope dashboard RUN --no-browser --port N``), opens
each page in headless Chromium (Playwright driving Debian's ``/usr/bin/chromium``)
and saves a screenshot once the page has painted.

    .venv/bin/python docs/make_screenshots.py [RUN] [--out docs/screenshots] [--pages P.png ...]

The Whole run page needs a run with the light layer's collective log (the
reference runs have none): the README's picture comes from a 3-rank
``tests/jobs/scenario_job.py`` run under ``rankscope run --profile 58-62,118-122``
where rank 2 stalls 300 ms at steps 60 and 120.

RUN defaults to tests/data/reference_runs/h200_ddp4_straggler. The helpers here
(``start_server``, ``launch_browser``, ``wait_painted``) are reused by
``tests/integration/dashboard/test_browser.py`` and ``benchmarks/bench_dashboard.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUN = REPO / "tests" / "data" / "reference_runs" / "h200_ddp4_straggler"
CHROMIUM = os.environ.get("RANKSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# (file name, URL path, text that appears once the page has drawn)
PAGES = (
    ("overview.png", "", "Where each rank's step goes"),
    ("imbalance.png", "imbalance", "Who arrived last"),
    ("communication.png", "communication", "Arrival lag per collective"),
    ("gpu.png", "gpu", "Telemetry over time"),
    ("timeline.png", "timeline", "Timeline of one step"),
    ("kernels.png", "kernels", "spread (cv) near 0 means every"),
    ("compare.png", "compare", "Per rank"),
)
# Pages that need a run with the light layer's collective log (``--pages`` picks them).
LIGHT_PAGES = (("wholerun.png", "wholerun", "Look at a slow step"),)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def start_server(
    run: Path, port: int, timeout_s: float = 90.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``rankscope dashboard RUN --no-browser --port N``, killed with its children on exit."""
    cmd = [
        sys.executable,
        "-m",
        "rankscope.dashboard.cli",
        "dashboard",
        str(run),
        "--no-browser",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"dashboard exited with {proc.returncode}: {out}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"dashboard did not listen on port {port} within {timeout_s} s")
            time.sleep(0.2)
        yield proc
    finally:
        # The server runs in its own session: end it and its Streamlit child together.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_painted(page: Any, text: str, timeout_ms: float = 60_000) -> None:
    """Until ``text`` is visible and Streamlit has finished running the script."""
    page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout_ms)
    page.wait_for_function(
        "() => { const w = document.querySelector('[data-testid=\"stStatusWidget\"]');"
        " return !w || !w.innerText.includes('Running'); }",
        timeout=timeout_ms,
    )


def error_boxes(page: Any) -> list[str]:
    """Texts of Streamlit exception boxes and error alerts on the page."""
    found = []
    for sel in ('[data-testid="stException"]', '[data-testid="stAlertContentError"]'):
        found += [el.inner_text() for el in page.query_selector_all(sel)]
    return found


def shoot(
    run: Path,
    out: Path,
    width: int = 1500,
    height: int = 1900,
    only: set[str] | None = None,
) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    written = []
    with start_server(run, port), sync_playwright() as p:
        browser = launch_browser(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            for name, path, marker in PAGES + LIGHT_PAGES:
                if (name not in only) if only is not None else (name, path, marker) not in PAGES:
                    continue
                page.goto(f"http://127.0.0.1:{port}/{path}", timeout=120_000)
                wait_painted(page, marker, timeout_ms=120_000)
                page.wait_for_timeout(1500)  # plotly draws after the script ends
                errors = error_boxes(page)
                if errors:
                    raise RuntimeError(f"{name}: error on the page: {errors[0][:300]}")
                page.screenshot(path=str(out / name))
                written.append(out / name)
        finally:
            browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default=str(DEFAULT_RUN))
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    parser.add_argument(
        "--pages",
        nargs="*",
        help="only these screenshots (e.g. wholerun.png: it needs a run with a light-layer log)",
    )
    args = parser.parse_args()
    only = set(args.pages) if args.pages else None
    for path in shoot(Path(args.run), Path(args.out), only=only):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
