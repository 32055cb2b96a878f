"""Process-wide hooks into torch.distributed: run callbacks after init, before destroy.

``install()`` wraps ``torch.distributed.init_process_group`` and
``destroy_process_group`` once per process (on both ``torch.distributed`` and
``distributed_c10d``, since user code reaches them through either). A callback
that raises is swallowed: the job's own call always proceeds and returns as if
rankscope were not there. Callbacks are registered with ``on_init``/``on_destroy``
and removed with ``remove``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

_init_callbacks: list[Callable[[], None]] = []
_destroy_callbacks: list[Callable[[], None]] = []
_installed = False


def _run(callbacks: list[Callable[[], None]]) -> None:
    # A callback's owner reports its own faults; the job's call goes on regardless.
    for cb in list(callbacks):
        with contextlib.suppress(Exception):
            cb()


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    import torch.distributed as dist

    if not dist.is_available():
        return
    from torch.distributed import distributed_c10d

    original_init = distributed_c10d.init_process_group
    original_destroy = distributed_c10d.destroy_process_group

    @functools.wraps(original_init)
    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        result = original_init(*args, **kwargs)
        _run(_init_callbacks)
        return result

    @functools.wraps(original_destroy)
    def destroy_process_group(*args: Any, **kwargs: Any) -> Any:
        group = args[0] if args else kwargs.get("group")
        # Only the whole-job teardown (no group, or the default one) ends collection.
        world = getattr(getattr(distributed_c10d, "GroupMember", None), "WORLD", None)
        if group is None or group is world:
            _run(_destroy_callbacks)
        return original_destroy(*args, **kwargs)

    for module in (dist, distributed_c10d):
        module.init_process_group = init_process_group  # type: ignore[attr-defined]
        module.destroy_process_group = destroy_process_group  # type: ignore[attr-defined]


def on_init(cb: Callable[[], None]) -> None:
    _init_callbacks.append(cb)


def on_destroy(cb: Callable[[], None]) -> None:
    _destroy_callbacks.append(cb)


def remove(cb: Callable[[], None]) -> None:
    for callbacks in (_init_callbacks, _destroy_callbacks):
        while cb in callbacks:
            callbacks.remove(cb)
