"""A server that echoes the key back in its error never gets it repeated by us."""

from __future__ import annotations

from typing import ClassVar

from atelier_dalle.errors import _body_parts

KEY = "sk-canary-DALLE-0123456789abcdef"


class _Echo:
    status_code = 401
    code = "invalid_api_key"
    type = "invalid_request_error"
    body: ClassVar[dict[str, str]] = {
        "message": f"Incorrect API key provided: {KEY}. You can find your API key at ...",
        "code": "invalid_api_key",
    }


def test_echoed_keys_are_redacted_from_upstream_messages() -> None:
    code, _kind, message = _body_parts(_Echo())
    assert code == "invalid_api_key"
    assert KEY not in message and "sk-canary" not in message
    assert "Incorrect API key provided: [redacted]" in message
