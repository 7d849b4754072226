"""Test helpers for Atelier and for provider plugin authors.

- :class:`~atelier_core.testing.upstream.FakeUpstream`: a scriptable fake vendor HTTP
  server on 127.0.0.1 (queue replies and faults, assert on what reached it).
"""

from .upstream import FakeUpstream, Recorded, Reply

__all__ = ["FakeUpstream", "Recorded", "Reply"]
