"""The collector's settings, each defined once: name, default, environment variable, flag, doc.

``SETTINGS`` is the registry. ``Collector(...)`` takes each ``api`` setting as a
keyword argument with ``DEFAULTS[name]`` as its default; ``rankscope run`` adds
one flag per setting with a ``flag`` (``add_flags``), whose default is the
setting's environment variable when set, else ``run_default``; it hands the
values to every rank in ``ENV_CONFIG`` (JSON), and the autostart bootstrap
passes them to ``Collector`` (``collector_kwargs`` keeps only known ones).
``markdown_table()`` is the table in README.md (a test keeps the two equal).

``ENVIRONMENT`` is the same for the review side's environment variables (byte
limits, the cache, the Dask scheduler): ``env_value(name)`` is the one place
such a variable is parsed, and ``check_environment`` (run by the console script
before any command) rejects junk with one line naming the variable.

Also here: the environment variables ``rankscope run`` sets for the bootstrap
(``ENV_*``) and ``package_path()``, so the collector and the bootstrap share
them without importing each other. Standard library only.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
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
    # The root package is imported already (it is this module's parent); reading it
    # from sys.modules keeps the collector's modules free of an import of the root,
    # whose lazy attributes (Collector, load) would otherwise count as its imports.
    root = sys.modules["rankscope"].__file__
    assert root is not None
    return os.path.dirname(os.path.dirname(os.path.realpath(root)))


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _text(text: str) -> str:
    return text


_BYTE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# No limit rankscope reads needs more than this; a larger one is a typo (or "inf").
MAX_BYTE_COUNT = 1 << 50


def parse_bytes(text: str) -> int:
    """A positive byte count: ``1000000``, ``512M``, ``2G``, ``1.5G`` (K, M, G, T: 1024^n)."""
    body = text.strip()
    scale = _BYTE_UNITS.get(body[-1:].upper(), 1)
    digits = body[:-1] if scale != 1 else body
    try:
        number = float(digits)
    except ValueError:
        number = math.nan
    # float("inf"), "nan" and "1e400" parse as floats: they are not byte counts either.
    if not math.isfinite(number) or not 0 < number * scale <= MAX_BYTE_COUNT:
        raise ValueError(
            f"not a byte count such as 512M or 2G (a positive number up to {MAX_BYTE_COUNT >> 40}T)"
        )
    return int(number * scale)


def parse_finite(text: str) -> float:
    """A finite number (``nan`` and ``inf`` are refused, not read as "off")."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def parse_positive_s(text: str) -> float:
    """A finite number of seconds above 0 (0, a negative, ``nan`` and ``inf`` refused:
    none of them is a threshold, and each was once read as the default)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"not a number of seconds above 0: {text!r}")
    return value


_SCHEDULER = re.compile(
    r"^(?:(?:tcp|tls|ucx|ws|wss|inproc)://)?"  # the protocols distributed.Client knows
    r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])"  # a host name, an IPv4 or a bracketed IPv6
    r"(?::(?P<port>[0-9]{1,5}))?/?$"
)


def parse_scheduler(text: str) -> str:
    """A Dask scheduler address: ``HOST:PORT`` or ``tcp://HOST:PORT`` (tls, ucx, ws, wss too)."""
    m = _SCHEDULER.match(text.strip())
    if m is None or (m.group("port") is not None and not 0 < int(m.group("port")) < 65536):
        raise ValueError("not a scheduler address such as tcp://HOST:8786")
    return text.strip()


# A telemetry period longer than an hour is a typo: no sample would ever be seen.
MAX_PERIOD_MS = 3_600_000.0


def parse_period_ms(text: str) -> float:
    """A sampling period in ms: 0 (off) or a finite number up to ``MAX_PERIOD_MS``.

    ``nan``, ``inf`` and negative numbers are refused: they used to turn telemetry
    off in silence. (Periods under 1 ms are sampled every 1 ms, as before.)
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_PERIOD_MS:  # NaN fails every comparison
        raise ValueError(f"not 0 (off) or a number of ms up to {MAX_PERIOD_MS:.0f}: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError("not a non-negative integer")
    return value


def parse_port(text: str) -> int:
    """A TCP port, 1..65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value < 65536:
        raise ValueError(f"not a TCP port (1..65535): {text!r}")
    return value


@dataclass(frozen=True)
class EnvVar:
    """A review-side environment variable: its default (unset or empty) and how it parses."""

    name: str
    default: Any
    doc: str
    parse: Callable[[str], Any]


ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar(
        "RANKSCOPE_MAX_TRACE_BYTES",
        1 << 30,
        "the most bytes of JSON one trace file may hold, decompressed (e.g. 512M, 2G)",
        parse_bytes,
    ),
    EnvVar(
        "RANKSCOPE_MAX_JSONL_BYTES",
        1 << 30,
        "the most bytes of one steps, collectives or telemetry file that are read",
        parse_bytes,
    ),
    EnvVar(
        "RANKSCOPE_CACHE_MIN_BYTES",
        None,
        "traces smaller than this are parsed again rather than cached",
        _positive_int,
    ),
    EnvVar(
        "RANKSCOPE_DASK_SCHEDULER",
        None,
        "the Dask scheduler `ingest --executor dask` uses (unset: a local cluster)",
        parse_scheduler,
    ),
)
ENV_BY_NAME = {v.name: v for v in ENVIRONMENT}


def env_value(name: str, default: Any = None, environ: Mapping[str, str] | None = None) -> Any:
    """The parsed value of a variable of ``ENVIRONMENT`` (unset or empty: ``default``,
    else the registry's default); ValueError naming the variable for junk."""
    var = ENV_BY_NAME[name]
    raw = (os.environ if environ is None else environ).get(name, "")
    if not raw.strip():
        return var.default if default is None else default
    try:
        return var.parse(raw)
    except ValueError as e:
        raise ValueError(f"${name}={raw[:60]!r}: {e}") from None


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Parse every variable of ``ENVIRONMENT``; ValueError naming the first bad one."""
    for var in ENVIRONMENT:
        env_value(var.name, environ=environ)


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
        parse=parse_period_ms,
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
        parse=parse_positive_s,
        metavar="S",
    ),
    Setting(
        "metrics_port",
        None,
        "serve the light layer as Prometheus metrics on this port (`rankscope metrics`, "
        "started by the launcher or rank 0; needs prometheus_client; unset: off)",
        flag="--metrics-port",
        env="RANKSCOPE_METRICS_PORT",
        parse=parse_port,
        metavar="P",
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


def _arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its ValueError's message is what the user reads."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return checked


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
                type=_arg_type(s.parse),
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
