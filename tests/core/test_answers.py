"""The answer limit: an HTTP transport that stops reading a vendor's answer at the limit
the core sets for the call (``atelier_core.plugin.answers``), against a real server."""

from __future__ import annotations

import httpx2
import pytest

from atelier_core import UpstreamProtocolError, bounded_transport
from atelier_core.plugin.answers import answer_limit, answer_limit_for
from atelier_core.testing import FakeUpstream


async def test_declared_and_streamed_bodies_are_cut_at_the_limit() -> None:
    with FakeUpstream() as up:
        up.reply("GET", "/declared", body=b"x" * 200_000)
        up.reply("GET", "/streamed", sse=["y" * 65_536] * 8)  # 512 KiB, no Content-Length
        up.reply("GET", "/small", body=b"ok")
        up.reply("GET", "/unbounded", body=b"z" * 200_000)
        async with httpx2.AsyncClient(transport=bounded_transport()) as client:
            token = answer_limit.set(100_000)
            try:
                for path in ("/declared", "/streamed"):
                    with pytest.raises(UpstreamProtocolError) as info:
                        await client.get(up.url + path)
                    assert info.value.code == "upstream_answer_too_large" and not info.value.retryable
                assert (await client.get(up.url + "/small")).content == b"ok"
            finally:
                answer_limit.reset(token)
            # Outside a call (no limit set) it is a plain transport.
            assert len((await client.get(up.url + "/unbounded")).content) == 200_000


def test_the_limit_is_the_images_base64_plus_room_for_json() -> None:
    assert answer_limit_for(1, 3_000_000) == 4_000_000 + 1024 * 1024
    assert answer_limit_for(4, 3_000_000) == 16_000_000 + 1024 * 1024
