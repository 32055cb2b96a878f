"""The collector's settings, each defined once: name, default, environment variable, flag, doc.

``SETTINGS`` is the registry. ``Collector(...)`` takes each ``api`` setting as a
keyword argument with ``DEFAULTS[name]`` as its default; ``rankscope run`` adds
one flag per setting with a ``flag`` (``add_flags``), whose default is the
setting's environment variable when set, else ``run_default``; it hands the
values to every rank in ``ENV_CONFIG`` (JSON), and the autostart bootstrap
passes them to ``Collector`` (``collector_kwargs`` keeps only known ones).
``markdown_table()`` is the table in README.md (a test keeps the two equal).

Also here: the environment variables ``rankscope run`` sets for the bootstrap
(``ENV_*``) and ``package_path()``, so the collector and the bootstrap share
them without importing each other. Standard library only.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# What `rankscope run` sets in the job's environment for its bootstrap.
ENV_RUN_DIR = "RANKSCOPE_RUN_DIR"
ENV_CONFIG = "RANKSCOPE_CONFIG"  # JSON of Collector keyword arguments
ENV_COMMAND = "RANKSCOPE_COMMAND"  # JSON argv of the launched command
ENV_BOOTSTRAP = "RANKSCOPE_BOOTSTRAP_DIR"
ENV_PACKAGE_PATH = "RANKSCOPE_PACKAGE_PATH"
# What a process the collector starts itself (rankscope ingest) must not inherit.
ENV_ALL = (ENV_RUN_DIR, ENV_CONFIG, ENV_COMMAND, ENV_BOOTSTRAP, ENV_PACKAGE_PATH)


def package_path() -> str:
    """The folder that holds this ``rankscope`` package (site-packages, or src/ in a
    checkout): where a process this one starts must import rankscope from."""
    import rankscope

    return os.path.dirname(os.path.dirname(os.path.realpath(rankscope.__file__)))


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _text(text: str) -> str:
    return text


@dataclass(frozen=True)
class Setting:
    """One collector setting.

    ``flag`` is ``rankscope run``'s option (None: API only); a boolean whose
    ``flag`` starts with ``--no-`` turns the setting off. ``env`` sets the
    flag's default. ``api`` is False for a setting of ``rankscope run`` alone.
    """

    name: str
    default: Any
    doc: str
    flag: str | None = None
    env: str | None = None
    run_default: Any = None
    api: bool = True
    parse: Callable[[str], Any] = _text
    metavar: str | None = None

    @property
    def run_value(self) -> Any:
        """The default of ``rankscope run``'s flag (before its environment variable)."""
        return self.default if self.run_default is None else self.run_default


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "profile_steps",
        None,
        "torch.profiler windows in collector steps: 5-7, 5-7,50-52, "
        "wait=1,warmup=1,active=3,repeat=2, or off",
        flag="--profile",
        env="RANKSCOPE_PROFILE",
        run_default="5-7",
        metavar="STEPS",
    ),
    Setting(
        "record_shapes",
        False,
        "torch.profiler record_shapes",
        flag="--record-shapes",
        env="RANKSCOPE_RECORD_SHAPES",
        parse=_bool,
    ),
    Setting(
        "profile_memory",
        False,
        "torch.profiler profile_memory",
        flag="--profile-memory",
        env="RANKSCOPE_PROFILE_MEMORY",
        parse=_bool,
    ),
    Setting(
        "with_stack",
        False,
        "torch.profiler with_stack",
        flag="--with-stack",
        env="RANKSCOPE_WITH_STACK",
        parse=_bool,
    ),
    Setting("warmup_steps", 1, "profiler warm-up steps before each window", parse=int),
    Setting(
        "nvml_period_ms",
        100.0,
        "telemetry sampling period in ms (0 turns telemetry off)",
        flag="--nvml-period-ms",
        env="RANKSCOPE_NVML_PERIOD_MS",
        parse=float,
        metavar="N",
    ),
    Setting("flush_period_s", 2.0, "how often files are appended and flushed (s)", parse=float),
    Setting(
        "control_period_s",
        0.5,
        "how often a rank looks for an attach request (s; 0 turns attach and heartbeats off)",
        parse=float,
    ),
    Setting(
        "data_timing",
        True,
        "time the DataLoader's `__next__` per step",
        flag="--no-data-timing",
        env="RANKSCOPE_DATA_TIMING",
        parse=_bool,
    ),
    Setting(
        "collectives",
        True,
        "log every collective from PyTorch's flight recorder",
        flag="--no-collectives",
        env="RANKSCOPE_COLLECTIVES",
        parse=_bool,
    ),
    Setting(
        "auto_capture",
        False,
        "take a profiler window by itself when steps turn slow (rate-limited)",
        flag="--auto-capture",
        env="RANKSCOPE_AUTO_CAPTURE",
        parse=_bool,
    ),
    Setting(
        "ingest",
        False,
        "after each window, parse the rank's trace into the review cache "
        "($RANKSCOPE_CACHE_DIR) in a low-priority process",
        flag="--ingest",
        env="RANKSCOPE_INGEST",
        parse=_bool,
    ),
    Setting(
        "stall_after_s",
        None,
        "least time without a step (s) before a rank is stalled and writes its hang "
        "evidence; the threshold is the larger of it and 10x the median step (unset: 60)",
        flag="--stall-after-s",
        env="RANKSCOPE_STALL_S",
        parse=float,
        metavar="S",
    ),
    Setting(
        "nccl_timing",
        False,
        "set TORCH_NCCL_ENABLE_TIMING=1: NCCL GPU time per collective (costs CUDA events)",
        flag="--nccl-timing",
        env="RANKSCOPE_NCCL_TIMING",
        api=False,
        parse=_bool,
    ),
)

BY_NAME = {s.name: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS if s.api}


def collector_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Collector`` keyword arguments in ``config`` (anything else left out)."""
    return {k: v for k, v in config.items() if k in DEFAULTS}


def _is_switch(s: Setting) -> bool:
    return isinstance(s.default, bool)


def _negated(s: Setting) -> bool:
    return s.flag is not None and s.flag.startswith("--no-")


def flag_default(s: Setting, environ: Mapping[str, str]) -> Any:
    """The value ``rankscope run`` uses without the flag: the environment's, else run_value.

    Raises ValueError (naming the variable) for a value that does not parse.
    """
    raw = environ.get(s.env) if s.env else None
    if raw is None:
        return s.run_value
    try:
        return s.parse(raw)
    except ValueError as e:
        raise ValueError(f"${s.env}: {e}") from None


def add_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """One option per setting with a flag; ``config_from_args`` reads them back.

    A value in a setting's environment variable that does not parse raises ValueError.
    """
    # Every environment value is parsed before any option is added: all or nothing.
    defaults = {s.name: flag_default(s, environ) for s in SETTINGS if s.flag is not None}
    for s in SETTINGS:
        if s.flag is None:
            continue
        default = defaults[s.name]
        env_note = f" (${s.env})" if s.env else ""
        if _is_switch(s):
            # A switch flips the environment's (or the built-in) default.
            parser.add_argument(
                s.flag,
                dest=s.name,
                action="store_false" if _negated(s) else "store_true",
                default=bool(default),
                help=("turn off: " if _negated(s) else "") + s.doc + env_note,
            )
        else:
            parser.add_argument(
                s.flag,
                dest=s.name,
                type=s.parse,
                default=default,
                metavar=s.metavar,
                help=f"{s.doc} (default {s.run_value}; ${s.env})" if s.env else s.doc,
            )


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Every flagged setting's value from parsed arguments, by setting name."""
    return {s.name: getattr(args, s.name) for s in SETTINGS if s.flag is not None}


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else f"`{value}`"


def markdown_table() -> str:
    """The README's settings table (between ``<!-- settings:start -->`` and ``:end``)."""
    rows = [
        "Every collector setting, defined once in `rankscope.profiler.settings`; the",
        "environment variable sets the `rankscope run` flag's default.",
        "",
        "| setting | `Collector(...)` default | `rankscope run` flag (default) "
        "| environment variable | what it does |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        api = f"`{s.default}`" if s.api else "(run only)"
        flag = f"`{s.flag}` ({_cell(s.run_value)})" if s.flag else "-"
        rows.append(f"| `{s.name}` | {api} | {flag} | {_cell(s.env)} | {s.doc} |")
    return "\n".join(rows) + "\n"
