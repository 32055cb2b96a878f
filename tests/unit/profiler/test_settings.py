"""One registry of collector settings: Collector(), `rankscope run`, autostart and README agree."""

from __future__ import annotations

import argparse
import inspect
import re

import pytest
from conftest import REPO

from rankscope.profiler import autostart, settings
from rankscope.profiler.collector import Collector
from rankscope.profiler.commands.run import RunCommand


def test_readme_table_is_the_registry() -> None:
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert m is not None, "README.md lacks the settings markers"
    assert m.group(1) == settings.markdown_table(), (
        "README.md settings table is stale: paste settings.markdown_table() there"
    )


def test_collector_defaults_come_from_the_registry() -> None:
    params = inspect.signature(Collector).parameters
    for s in settings.SETTINGS:
        if s.api:
            assert params[s.name].default == s.default, s.name
        else:
            assert s.name not in params


def _run_parser(environ: dict[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    if environ is None:
        RunCommand().prepare_parser(parser)
    else:
        settings.add_flags(parser, environ)
    return parser


def test_run_flags_cover_every_flagged_setting_with_its_defaults() -> None:
    args = _run_parser().parse_args(["--out", "x", "--", "python"])
    config = settings.config_from_args(args)
    flagged = [s for s in settings.SETTINGS if s.flag]
    assert sorted(config) == sorted(s.name for s in flagged)
    assert config == {s.name: s.run_value for s in flagged}
    args = _run_parser().parse_args(
        ["--out", "x", "--no-collectives", "--auto-capture", "--profile", "off", "--", "python"]
    )
    config = settings.config_from_args(args)
    assert config["collectives"] is False and config["auto_capture"] is True
    assert config["profile_steps"] == "off" and config["data_timing"] is True


def test_environment_sets_a_flags_default_and_the_flag_still_wins() -> None:
    env = {"RANKSCOPE_PROFILE": "20-22", "RANKSCOPE_COLLECTIVES": "0", "RANKSCOPE_INGEST": "yes"}
    config = settings.config_from_args(_run_parser(env).parse_args([]))
    assert config["profile_steps"] == "20-22" and config["collectives"] is False
    assert config["ingest"] is True
    config = settings.config_from_args(_run_parser(env).parse_args(["--profile", "1-2"]))
    assert config["profile_steps"] == "1-2"


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"\$RANKSCOPE_NVML_PERIOD_MS"):
        settings.add_flags(argparse.ArgumentParser(), {"RANKSCOPE_NVML_PERIOD_MS": "fast"})


def test_autostart_passes_only_collector_settings() -> None:
    auto = autostart.AutoStart("run", {"nvml_period_ms": 5.0, "nccl_timing": True, "x": 1}, None)
    assert auto.config == {"nvml_period_ms": 5.0}


def test_collector_does_not_import_autostart() -> None:
    import ast

    tree = ast.parse((REPO / "profiler" / "collector.py").read_text())
    names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom | ast.Import)
        for alias in node.names
    }
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "autostart" not in names and "rankscope.profiler.autostart" not in modules


def test_bootstrap_uses_the_registry_environment_names() -> None:
    # sitecustomize runs before rankscope may be imported, so it spells the names out.
    text = (REPO / "profiler" / "bootstrap" / "sitecustomize.py").read_text()
    spelled = set(re.findall(r'"(RANKSCOPE_[A-Z_]+)"', text))
    assert spelled and spelled <= set(settings.ENV_ALL)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "1e9", "x", ""])
def test_the_nvml_period_refuses_what_used_to_turn_telemetry_off(text: str) -> None:
    with pytest.raises(ValueError, match="not 0 \\(off\\)"):
        settings.parse_period_ms(text)


@pytest.mark.parametrize("text", ["nan", "inf", "-5", "0"])
def test_a_stall_threshold_that_is_no_threshold_is_refused_by_name(text: str) -> None:
    # each of these was read as the 60 s default (inf: never stalled), without a word
    with pytest.raises(ValueError, match=r"\$RANKSCOPE_STALL_S: not a number of seconds above 0"):
        settings.add_flags(argparse.ArgumentParser(), {"RANKSCOPE_STALL_S": text})
    parser = argparse.ArgumentParser()
    settings.add_flags(parser, {})
    assert (
        settings.config_from_args(parser.parse_args(["--stall-after-s", "2.5"]))["stall_after_s"]
        == 2.5
    )


def test_the_nvml_period_accepts_off_and_milliseconds() -> None:
    assert [settings.parse_period_ms(t) for t in ("0", "0.5", "100", "3600000")] == [
        0.0,
        0.5,
        100.0,
        3_600_000.0,
    ]


@pytest.mark.parametrize(
    ("text", "value"), [("1000", 1000), ("512M", 512 << 20), ("2g", 2 << 30), ("1.5K", 1536)]
)
def test_byte_counts(text: str, value: int) -> None:
    assert settings.parse_bytes(text) == value


@pytest.mark.parametrize("address", ["host:8786", "tcp://10.0.0.1:8786", "tls://[::1]:8786"])
def test_scheduler_addresses(address: str) -> None:
    assert settings.parse_scheduler(address) == address


def test_check_environment_names_the_first_bad_variable() -> None:
    settings.check_environment({"RANKSCOPE_MAX_TRACE_BYTES": "2G"})
    with pytest.raises(ValueError, match=r"^\$RANKSCOPE_DASK_SCHEDULER='tcp://h:99999'"):
        settings.check_environment({"RANKSCOPE_DASK_SCHEDULER": "tcp://h:99999"})
