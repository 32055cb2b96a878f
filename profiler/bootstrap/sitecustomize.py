"""rankscope's bootstrap: ``rankscope run`` prepends this folder to PYTHONPATH.

Python imports ``sitecustomize`` at start-up in every interpreter the job
launches (torchrun, its workers, ``python -m ...``, plain ``python``). This one
(1) runs the ``sitecustomize`` it shadows, if any, so the environment's own
start-up code still happens, and (2) installs a one-shot import hook that waits
for ``torch``: only once torch has finished importing does it load rankscope and
call ``rankscope.profiler.autostart.arm_from_env()``. A process that never imports torch
pays for a few stat calls and nothing else; torch is never imported from here.

Standard library only, and nothing here may raise: a broken bootstrap must not
stop the user's program from starting.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

_HERE = os.path.dirname(os.path.abspath(__file__))


def _say(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"rankscope: {message}\n")


def _chain_shadowed_sitecustomize() -> None:
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    try:
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    except Exception:
        return
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    # The import machinery returns whatever sits in sys.modules under our name
    # once this file finishes: the shadowed module takes our place.
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        _say(f"error in {spec.origin}: {type(e).__name__}: {e}")


def _load_autostart() -> ModuleType:
    package_path = os.environ.get("RANKSCOPE_PACKAGE_PATH")
    if "rankscope" not in sys.modules and package_path:
        # Load rankscope from where `rankscope run` lives, not from whatever
        # `rankscope` the job's own sys.path might offer first.
        spec = importlib.machinery.PathFinder.find_spec("rankscope", [package_path])
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules["rankscope"] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules["rankscope"]
                raise
    from rankscope.profiler import autostart

    return autostart


def _on_torch_imported() -> None:
    try:
        _load_autostart().arm_from_env()
    except Exception as e:
        _say(f"not collecting in this process: {type(e).__name__}: {e}")


class _TorchImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps torch's loader so rankscope arms right after it."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != "torch":
            return None
        # One shot, and not asked again by the search below.
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        try:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if find is not None:
                    spec = find(fullname, path, target)
                    if spec is not None:
                        break
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            loader = spec.loader
            exec_torch = loader.exec_module

            def exec_module(module: ModuleType) -> None:
                exec_torch(module)
                _on_torch_imported()

            loader.exec_module = exec_module
            return spec
        except Exception as e:
            _say(f"import hook failed: {type(e).__name__}: {e}")
            return None


_chain_shadowed_sitecustomize()
if os.environ.get("RANKSCOPE_RUN_DIR") and "torch" not in sys.modules:
    sys.meta_path.insert(0, _TorchImportHook())
