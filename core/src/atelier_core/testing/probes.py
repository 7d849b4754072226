"""The provider contract's probes: fresh instances, import and I/O traps, failure reports.

Used by :class:`atelier_core.testing.contract.ProviderContract`; not part of the public kit.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from atelier_core.plugin.provider import Provider, ProviderSettings
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageRequest
from atelier_core.testing.cases import cases_for, validated

__all__ = [
    "Trapped",
    "fresh_instance",
    "modules_imported_by",
    "queue_request",
    "report",
    "secrets_of",
    "third_party",
    "trap_io",
]


def fresh_instance(provider: Provider) -> Provider:
    """A new instance with the same settings: what a restarted server would have."""
    fresh = type(provider)()
    fresh.configure(type(provider.settings).model_validate(provider.settings.model_dump()))
    return fresh


def queue_request(provider: Provider) -> ImageRequest:
    spec = next((s for s in provider.catalog() if s.supports(Operation.GENERATE)), provider.catalog()[0])
    operation = Operation.GENERATE if spec.supports(Operation.GENERATE) else sorted(spec.operations)[0]
    return validated(provider, spec, cases_for(spec, operation)[0])


def report(problems: Sequence[str]) -> None:
    if problems:
        pytest.fail(f"{len(problems)} problem(s):\n- " + "\n- ".join(problems), pytrace=False)


def secrets_of(settings: ProviderSettings) -> list[str]:
    out = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 4:
            out.append(value.get_secret_value())
    return out


_IMPORTED: dict[str, frozenset[str]] = {}


def modules_imported_by(module: str) -> frozenset[str]:
    """Modules a fresh interpreter adds when importing ``module`` after atelier_core.

    Cached per process: the answer cannot change while the test session runs.
    """
    if module not in _IMPORTED:
        script = (
            "import json, sys\n"
            "import atelier_core, atelier_core.engine.registry, atelier_core.engine.validation\n"
            "before = {name.split('.')[0] for name in sys.modules}\n"
            f"import {module}\n"
            "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules} - before)))\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"importing {module} failed:\n{done.stderr[-2000:]}", pytrace=False)
        _IMPORTED[module] = frozenset(json.loads(done.stdout.strip().splitlines()[-1]))
    return _IMPORTED[module]


def third_party(modules: set[str] | frozenset[str]) -> set[str]:
    tops = {name.split(".")[0] for name in modules}
    return {top for top in tops if top not in sys.stdlib_module_names and not top.startswith("_") and top != "__main__"}


class Trapped(OSError):
    """Raised inside register_providers when it attempts I/O."""


@contextmanager
def trap_io() -> Iterator[list[str]]:
    """Make network, file and subprocess access fail (and record each attempt)."""
    attempts: list[str] = []

    def trap(what: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            target = args[1] if what == "socket.connect" and len(args) > 1 else (args[0] if args else "")
            attempts.append(f"{what}({target!r})")
            raise Trapped(f"{what} is not allowed while registering providers")

        return refuse

    patches: list[tuple[Any, str, Any]] = [
        (socket.socket, "connect", trap("socket.connect")),
        (socket.socket, "connect_ex", trap("socket.connect")),
        (socket, "create_connection", trap("socket.create_connection")),
        (socket, "getaddrinfo", trap("socket.getaddrinfo")),
        (builtins, "open", trap("open")),
        (io, "open", trap("open")),
        (os, "open", trap("os.open")),
        (subprocess.Popen, "__init__", trap("subprocess")),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, replacement in patches:
            setattr(obj, name, replacement)
        yield attempts
    finally:
        for obj, name, original in saved:
            setattr(obj, name, original)
