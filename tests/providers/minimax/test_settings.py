"""Settings: key and host selection through the same path the registry takes."""

from __future__ import annotations

import pytest

import atelier_minimax
from atelier_core import ConfigurationError
from atelier_core.engine.registry import build_registry
from atelier_core.settings import Settings
from atelier_minimax import HOSTS, MiniMaxProvider, MiniMaxSettings, resolve_base_url


def _loaded() -> MiniMaxProvider:
    """The provider as the registry configures it (env, ATELIER_ variables, TOML)."""
    registry = build_registry(Settings(), plugins=[("minimax", atelier_minimax)], entry_points=False)
    assert not registry.problems
    provider = registry.providers["minimax"]
    assert isinstance(provider, MiniMaxProvider)
    return provider


def test_defaults_to_the_international_host_and_10_rpm() -> None:
    provider = _loaded()
    assert provider.base_url == "https://api.minimax.io" == HOSTS["global"]
    assert provider.settings.requests_per_minute == 10
    assert provider.settings.api_key is None


def test_region_cn_selects_the_mainland_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_PROVIDERS__MINIMAX__REGION", "cn")
    assert _loaded().base_url == "https://api.minimaxi.com"


@pytest.mark.parametrize(
    ("given", "host"),
    [("china", "cn"), ("Mainland", "cn"), ("international", "global"), ("GLOBAL", "global"), ("intl", "global")],
)
def test_region_spellings(given: str, host: str) -> None:
    assert resolve_base_url(MiniMaxSettings(region=given)) == HOSTS[host]


def test_unknown_region_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_PROVIDERS__MINIMAX__REGION", "mars")
    registry = build_registry(Settings(), plugins=[("minimax", atelier_minimax)], entry_points=False)
    (record,) = registry.plugins
    assert record.status == "failed"
    assert "region" in (record.error or "")


def test_minimax_api_host_variable_selects_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMAX_API_HOST", "https://api.minimaxi.com")
    assert _loaded().base_url == "https://api.minimaxi.com"


def test_api_host_wins_over_region_and_accepts_a_bare_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_PROVIDERS__MINIMAX__REGION", "global")
    monkeypatch.setenv("MINIMAX_API_HOST", "api.minimaxi.com/")
    assert _loaded().base_url == "https://api.minimaxi.com"


def test_base_url_wins_over_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMAX_API_HOST", "https://api.minimaxi.com")
    monkeypatch.setenv("ATELIER_PROVIDERS__MINIMAX__BASE_URL", "http://127.0.0.1:9/gateway/v1")
    assert _loaded().base_url == "http://127.0.0.1:9/gateway"  # /v1 is added per request


def test_toml_table_configures_the_provider(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    config = tmp_path / "atelier.toml"
    config.write_text('[providers.minimax]\nregion = "cn"\napi_key = "from-toml"\nrequests_per_minute = 3\n')
    monkeypatch.setenv("ATELIER_CONFIG", str(config))
    provider = _loaded()
    assert provider.base_url == HOSTS["cn"]
    assert provider.settings.requests_per_minute == 3
    assert provider.settings.api_key is not None
    assert provider.settings.api_key.get_secret_value() == "from-toml"


def test_vendor_key_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMAX_API_KEY", "vendor-key")
    provider = _loaded()
    assert provider.settings.api_key is not None
    assert provider.settings.api_key.get_secret_value() == "vendor-key"
    assert all(provider.unavailable_reason(spec) is None for spec in provider.catalog())


def test_atelier_key_variable_wins_over_the_vendor_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMAX_API_KEY", "vendor-key")
    monkeypatch.setenv("ATELIER_PROVIDERS__MINIMAX__API_KEY", "atelier-key")
    key = _loaded().settings.api_key
    assert key is not None and key.get_secret_value() == "atelier-key"


def test_a_bare_api_key_variable_is_not_mistaken_for_minimax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "someone-elses")
    assert _loaded().settings.api_key is None


def test_without_a_key_the_reason_names_the_variables() -> None:
    provider = _loaded()
    reason = provider.unavailable_reason(provider.catalog()[0])
    assert reason is not None
    assert "MINIMAX_API_KEY" in reason and "ATELIER_PROVIDERS__MINIMAX__API_KEY" in reason


@pytest.mark.parametrize("bad", ["ftp://api.minimax.io", "https://", "http:///path"])
def test_a_malformed_host_makes_models_unavailable_with_the_reason(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("MINIMAX_API_KEY", "k")
    monkeypatch.setenv("MINIMAX_API_HOST", bad)
    provider = _loaded()
    reason = provider.unavailable_reason(provider.catalog()[0])
    assert reason is not None and "MINIMAX_API_HOST" in reason and "https://api.minimax.io" in reason
    with pytest.raises(ConfigurationError):
        _ = provider.base_url


def test_key_never_in_reprs_or_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMAX_API_KEY", "sk-very-secret-value")
    provider = _loaded()
    for text in (repr(provider.settings), provider.settings.model_dump_json(), str(provider.describe())):
        assert "sk-very-secret-value" not in text


def test_configure_accepts_plain_provider_settings() -> None:
    from atelier_core import ProviderSettings

    provider = MiniMaxProvider()
    provider.configure(ProviderSettings(api_key="k", requests_per_minute=4))
    assert isinstance(provider.settings, MiniMaxSettings)
    assert provider.settings.requests_per_minute == 4
    assert provider.base_url == HOSTS["global"]
