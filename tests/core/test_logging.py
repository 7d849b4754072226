"""logging: stderr only, one pipeline for structlog and stdlib, redaction of canaries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from pydantic import SecretStr

from atelier_core.logging import REDACTED, add_secret, configure_logging, redact, reset_logging, scrub
from atelier_core.settings import LoggingSettings

CANARY = "canary-secret-7f3a9c1d2e"


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    yield
    reset_logging()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_structlog_and_stdlib_go_to_stderr_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(level="INFO", format="json"))
    structlog.get_logger("atelier.test").info("hello", n=1)
    logging.getLogger("some.library").warning("from stdlib %s", "args")
    out, err = capsys.readouterr()
    assert out == ""
    lines = json_lines(err)
    assert lines[0]["event"] == "hello" and lines[0]["n"] == 1 and lines[0]["logger"] == "atelier.test"
    assert lines[0]["level"] == "info"
    assert lines[1]["event"] == "from stdlib args" and lines[1]["logger"] == "some.library"


def test_console_format_and_level_filter(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(level="WARNING", format="console"))
    log = structlog.get_logger("atelier.test")
    log.info("quiet")
    log.warning("loud", detail="x")
    out, err = capsys.readouterr()
    assert out == ""
    assert "quiet" not in err and "loud" in err and "detail=x" in err


def test_noisy_libraries_raised_to_warning_unless_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(level="INFO"))
    logging.getLogger("httpx2").info("HTTP Request: GET https://x")
    logging.getLogger("mcp.server").info("processing request")
    logging.getLogger("openai").warning("important")
    err = capsys.readouterr().err
    assert "HTTP Request" not in err and "processing request" not in err and "important" in err
    configure_logging(LoggingSettings(level="DEBUG"))
    logging.getLogger("httpx2").debug("now visible")
    assert "now visible" in capsys.readouterr().err


def test_basic_config_after_us_adds_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """The MCP SDK calls basicConfig when the server is built; it must stay a no-op."""
    configure_logging(LoggingSettings(format="json"))
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("x").warning("once")
    out, err = capsys.readouterr()
    assert out == "" and err.count("once") == 1


def test_reconfiguring_does_not_duplicate(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(format="json"))
    configure_logging(LoggingSettings(format="json"))
    structlog.get_logger("a").warning("single")
    assert capsys.readouterr().err.count("single") == 1


def test_canary_never_appears_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    """The openai-python debug-logging test pattern: plant the secret everywhere."""
    configure_logging(LoggingSettings(level="DEBUG", format="json"), secrets=[CANARY])
    log = structlog.get_logger("atelier.test")
    log.info("request", headers={"Authorization": f"Bearer {CANARY}", "x-goog-api-key": CANARY})
    log.info("url", url=f"https://api.example/v1?key={CANARY}&alt=json")
    log.info(f"message containing {CANARY} inline")
    log.info("nested", data={"list": [f"a {CANARY} b", ("t", CANARY)]}, api_key=CANARY)
    logging.getLogger("httpx2").debug("stdlib %s", CANARY)
    logging.getLogger("openai").info("error body: %s", {"error": f"bad key {CANARY}"})
    try:
        raise RuntimeError(f"upstream said 401 for {CANARY}")
    except RuntimeError:
        log.exception("failed")
        logging.getLogger("lib").exception("stdlib failed")
    out, err = capsys.readouterr()
    assert out == ""
    assert CANARY not in err
    assert err.count(REDACTED) >= 8
    assert "Traceback" in err and "RuntimeError" in err


def test_secret_env_vars_are_registered(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMAX_API_KEY", "env-canary-5566778899")
    configure_logging(LoggingSettings(format="json"))
    structlog.get_logger("x").warning("echo", text="key was env-canary-5566778899")
    assert "env-canary-5566778899" not in capsys.readouterr().err


def test_add_secret_after_configuration_and_secretstr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(format="json"))
    add_secret(SecretStr("late-secret-value-123"))
    add_secret("abc")  # too short to be registered; must not mask ordinary words
    add_secret(None)
    structlog.get_logger("x").warning("late-secret-value-123 abc")
    err = capsys.readouterr().err
    assert "late-secret-value-123" not in err and "abc" in err


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("key sk-proj-AbCdEf0123456789xyz used", "sk-proj-AbCdEf0123456789xyz"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("GET https://generativelanguage.googleapis.com/v1?key=AIzaSyA-1234567890abcdefghijklmnopqrs", "AIzaSy"),
        ("https://cdn.example/img.png?X-Amz-Signature=deadbeefcafe&x=1", "deadbeefcafe"),
        ("https://h/x?sig=s3cr3tsig&token=tok123456", "s3cr3tsig"),
    ],
)
def test_patterns_are_masked(text: str, leak: str) -> None:
    assert leak not in redact(text)


def test_sensitive_keys_and_truncation() -> None:
    out = redact(
        {
            "api_key": "x",
            "Authorization": "y",
            "input_tokens": 5,
            "password": "p",
            "nested": {"client_secret": "s", "ok": "fine"},
            "blob": "A" * 5000,
            "raw": b"\x00" * 10,
        }
    )
    assert out["api_key"] == out["Authorization"] == out["password"] == REDACTED
    assert out["input_tokens"] == 5
    assert out["nested"] == {"client_secret": REDACTED, "ok": "fine"}
    assert len(out["blob"]) < 600 and "chars)" in out["blob"]
    assert out["raw"] == "<10 bytes>"
    assert redact(SecretStr("hidden")) == REDACTED


def test_capture_logs_still_works_for_other_tests() -> None:
    configure_logging(LoggingSettings())
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger("atelier.x").info("captured", a=1)
    assert logs == [{"event": "captured", "a": 1, "log_level": "info"}]


def test_credentials_in_any_url_are_redacted_and_nothing_else() -> None:
    from atelier_core.logging import add_url_credentials, redact_url_credentials

    cases = {
        "http://user:pw@host/x": "http://[REDACTED]@host/x",
        "see https://a:b@c@h.example:8/p?q=1 and ftp://tok@y": "see https://[REDACTED]@h.example:8/p?q=1 and ftp://[REDACTED]@y",
        "postgresql+asyncpg://u:p@db/atelier": "postgresql+asyncpg://[REDACTED]@db/atelier",
        "HTTP://U:P@H": "HTTP://[REDACTED]@H",
        # not credentials: unchanged
        "http://h/x@y": "http://h/x@y",
        "mail user@example.com": "mail user@example.com",
        "data:image/png;base64,AAAA@": "data:image/png;base64,AAAA@",
    }
    for given, expected in cases.items():
        assert redact_url_credentials(given) == expected
        assert scrub(given) == expected
    add_url_credentials({"providers": {"x": {"base_url": "https://svc:lonely-pw-7Hq@api.example/v1"}}})
    assert "lonely-pw-7Hq" not in scrub("the password lonely-pw-7Hq on its own")
