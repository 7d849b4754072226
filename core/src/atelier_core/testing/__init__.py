"""Test helpers for Atelier and for provider plugin authors.

- :class:`ProviderContract`: the checks every provider passes; subclass it in a test
  module and supply ``plugin``, ``provider`` (and ``refuse``) fixtures.
- :func:`configured`: configure a provider instance from keyword settings.
- :class:`FakeUpstream`: a scriptable fake vendor HTTP server on 127.0.0.1 (queue replies
  and faults, assert on what reached it).
- :func:`make_image`, :func:`make_mask`, :func:`read_image`: real images in memory.

``ProviderContract`` and ``configured`` need pytest, so they are imported on first use;
the rest of this package works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .samples import SampleInfo, make_image, make_mask, read_image
from .upstream import FakeUpstream, Recorded, Reply

if TYPE_CHECKING:
    from .contract import ProviderContract, configured

__all__ = [
    "FakeUpstream",
    "ProviderContract",
    "Recorded",
    "Reply",
    "SampleInfo",
    "configured",
    "make_image",
    "make_mask",
    "read_image",
]

_NEEDS_PYTEST = {"ProviderContract", "configured"}


def __getattr__(name: str) -> Any:
    if name in _NEEDS_PYTEST:
        from . import contract

        return getattr(contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
