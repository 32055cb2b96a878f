"""The hang banner and page on a run that hung (``tests/data/hang_runs/stop``).

That run is ``tests/jobs/hang_job.py --scenario stop --rank 2 --at 6`` on 3 gloo
ranks under ``rankscope run`` (stall threshold 2 s, process-group timeout 6 s):
rank 2 slept before its all_reduce, ranks 0 and 1 timed out, torchrun sent rank 2
SIGTERM. Its ``control/`` folder is left out (heartbeats of a job long gone).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

MAIN = REPO / "dashboard" / "app" / "main.py"
RUN = REPO / "tests" / "data" / "hang_runs" / "stop"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppTest]:
    saved = {k: os.environ.get(k) for k in ("RANKSCOPE_DASHBOARD_PATH", "RANKSCOPE_CACHE_DIR")}
    os.environ["RANKSCOPE_DASHBOARD_PATH"] = str(RUN)
    os.environ["RANKSCOPE_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "cache")
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    yield at
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_every_page_of_a_hung_run_has_the_banner(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]
    banner = [e.value.replace("\\", "") for e in app.error]  # markdown escapes
    assert len(banner) == 1 and "This run did not finish" in banner[0]
    assert "Rank 2 never issued all_reduce seq 7" in banner[0]


def test_the_hang_page_shows_verdict_table_and_stacks(app: AppTest, tmp_path: Path) -> None:
    app.switch_page("views/hang.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert "Rank 2 never issued" in app.subheader[0].value
    ranks, table = app.dataframe[0].value, app.dataframe[1].value
    assert list(ranks["state"]) == ["failed", "failed", "signalled"]
    assert set(table["seq"]) == {6, 7}
    assert any("wait_for_peers" in c.value for c in app.code)
