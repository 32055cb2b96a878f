"""Strings from a trace or a path are plain text on the dashboard, never markup.

A run folder whose name holds a backtick and markdown link syntax, and a trace
whose busiest kernel is named ``<a href="http://x">k</a>``: the sidebar, titles
and warnings show those characters escaped (no markdown link), and the Kernels
chart carries the name HTML-escaped (plotly would render the tag as a link).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DATA, REPO
from streamlit.testing.v1 import AppTest

from rankscope.dashboard.app import text

MAIN = REPO / "dashboard" / "app" / "main.py"
SOURCE = DATA / "reference_runs" / "h200_ddp2_balanced"
RUN_NAME = "run`x` [link](https:evil.example)"  # a folder name holds no slash
KERNEL = (  # one of the busiest kernels in both ranks' traces
    "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64_1x4x1"
    "_cga1x1x1_kernel0_0"
)
EVIL_KERNEL = '<a href="http://x">k</a>'


def _rename_kernel(trace: Path) -> None:
    d = json.loads(gzip.decompress(trace.read_bytes()))
    for e in d["traceEvents"]:
        if e.get("name") == KERNEL:
            e["name"] = EVIL_KERNEL
    trace.write_bytes(gzip.compress(json.dumps(d).encode(), compresslevel=1))


@pytest.fixture(scope="module")
def at(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppTest]:
    run = tmp_path_factory.mktemp("plain") / RUN_NAME
    shutil.copytree(SOURCE, run)
    for trace in run.glob("*.pt.trace.json.gz"):
        _rename_kernel(trace)
    saved = {k: os.environ.get(k) for k in ("RANKSCOPE_DASHBOARD_PATH", "RANKSCOPE_CACHE_DIR")}
    os.environ["RANKSCOPE_DASHBOARD_PATH"] = str(run)
    os.environ["RANKSCOPE_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "rankscope-cache")
    app = AppTest.from_file(str(MAIN), default_timeout=120)
    app.run()
    yield app
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _markdown_sources(at: AppTest) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "title", "warning", "info", "error", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(e.value) for e in at.sidebar.caption]
    return out


def test_a_run_folder_name_is_not_markdown(at: AppTest) -> None:
    at.switch_page("views/overview.py").run()
    assert not at.exception, [e.value for e in at.exception]
    sources = _markdown_sources(at)
    escaped = text.md(RUN_NAME)
    assert any(escaped in s for s in sources), sources  # the name is shown...
    for s in sources:  # ...and never as a link or a code span
        assert "](https:evil" not in s and "`x`" not in s, s
    assert "\\[link\\]\\(https\\:evil" in escaped


def test_a_kernel_name_is_not_html(at: AppTest) -> None:
    at.switch_page("views/kernels.py").run()
    assert not at.exception, [e.value for e in at.exception]
    specs = [e.proto.spec for e in at.get("plotly_chart")]
    assert specs
    joined = "\n".join(specs)
    assert "<a href" not in joined and "\\u003ca href" not in joined.lower()
    assert "&lt;a href" in joined


def test_escapes() -> None:
    assert text.md("a`b[c](http://d)") == "a\\`b\\[c\\]\\(http\\://d\\)"
    assert text.html('<a href="x">k</a>') == '&lt;a href="x"&gt;k&lt;/a&gt;'
