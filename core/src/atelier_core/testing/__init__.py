"""Test helpers for Atelier and for provider plugin authors.

- :class:`ProviderContract`: the checks every provider passes; subclass it in a test
  module and supply ``plugin``, ``provider`` (and ``refuse``) fixtures.
- :func:`configured`: configure a provider instance from keyword settings.
- :class:`FakeUpstream`: a scriptable fake vendor HTTP server on 127.0.0.1 (queue replies
  and faults, assert on what reached it).
- :class:`FakeProvider`, :class:`Outcome`, :func:`fake_spec`: a scripted provider that
  is its own plugin, for tests of everything above the provider.
- :class:`FakeQueueVendor`, :class:`FakeQueueProvider`: a queue-based vendor (submit →
  poll → fetch) that outlives provider instances, and a provider for it.
- :func:`build_test_atelier`, :func:`build_test_registry`, :func:`isolated_settings`:
  an isolated service with exactly the plugins given; :func:`connect`: an in-memory MCP
  client connected to it.
- :func:`make_image`, :func:`make_mask`, :func:`read_image`: real images in memory.

``ProviderContract`` and ``configured`` need pytest and ``connect`` needs the MCP SDK,
so they are imported on first use; the rest works without either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atelier_core.testing.fakes import FakeCall, FakeProvider, Outcome, fake_spec
from atelier_core.testing.harness import (
    build_test_atelier,
    build_test_registry,
    connect,
    isolated_settings,
    plugin_pairs,
)
from atelier_core.testing.queue import FakeQueueProvider, FakeQueueVendor
from atelier_core.testing.samples import SampleInfo, make_image, make_mask, read_image
from atelier_core.testing.upstream import FakeUpstream, Recorded, Reply

if TYPE_CHECKING:
    from atelier_core.testing.contract import ProviderContract, configured

__all__ = [
    "FakeCall",
    "FakeProvider",
    "FakeQueueProvider",
    "FakeQueueVendor",
    "FakeUpstream",
    "Outcome",
    "ProviderContract",
    "Recorded",
    "Reply",
    "SampleInfo",
    "build_test_atelier",
    "build_test_registry",
    "configured",
    "connect",
    "fake_spec",
    "isolated_settings",
    "make_image",
    "make_mask",
    "plugin_pairs",
    "read_image",
]

_NEEDS_PYTEST = {"ProviderContract", "configured"}


def __getattr__(name: str) -> Any:
    if name in _NEEDS_PYTEST:
        from atelier_core.testing import contract

        return getattr(contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
