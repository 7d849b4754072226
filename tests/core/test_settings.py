"""Settings: defaults, ATELIER_* variables with ``__`` nesting, the TOML file, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from atelier_core.settings import Settings, config_path


def test_defaults_live_under_the_data_dir(isolated_env: Path) -> None:
    settings = Settings()
    assert settings.resolved_data_dir == isolated_env / "data"
    assert settings.output_dir == isolated_env / "data" / "images"
    assert settings.default_model is None
    assert settings.preview.max_edge == 512 and settings.preview.max_bytes == 150_000
    assert settings.http.host == "127.0.0.1" and settings.http.auth_token is None
    assert settings.providers == {}


def test_config_path_defaults_to_the_user_config_dir(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    monkeypatch.delenv("ATELIER_CONFIG")
    assert config_path() == isolated_env / "xdg-config" / "atelier" / "atelier.toml"
    monkeypatch.setenv("ATELIER_CONFIG", "~/elsewhere.toml")
    assert config_path() == Path("~/elsewhere.toml").expanduser()


def test_environment_variables_nest_with_double_underscores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_DEFAULT_MODEL", "placeholder")
    monkeypatch.setenv("ATELIER_STORAGE__OUTPUT_DIR", str(tmp_path / "pictures"))
    monkeypatch.setenv("ATELIER_STORAGE__INPUT_DIRS", f'["{tmp_path}"]')
    monkeypatch.setenv("ATELIER_PREVIEW__MAX_EDGE", "256")
    monkeypatch.setenv("ATELIER_LOGGING__LEVEL", "debug")  # case-insensitive values for the level
    monkeypatch.setenv("ATELIER_PLUGINS__ALLOW", '["placeholder"]')
    monkeypatch.setenv("ATELIER_HTTP__AUTH_TOKEN", "tok-123")
    monkeypatch.setenv("ATELIER_PROVIDERS__OPENAI__TIMEOUT_S", "30")
    settings = Settings()
    assert settings.default_model == "placeholder"
    assert settings.output_dir == tmp_path / "pictures"
    assert settings.storage.input_dirs == [tmp_path]
    assert settings.preview.max_edge == 256
    assert settings.logging.level == "DEBUG"
    assert settings.plugins.allow == ["placeholder"]
    assert settings.http.auth_token is not None and settings.http.auth_token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(settings) and "tok-123" not in str(settings.model_dump(mode="json"))
    assert settings.provider_values("openai") == {"timeout_s": "30"}


def test_toml_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "atelier.toml"
    config.write_text(
        'default_model = "offline"\n'
        "[storage]\n"
        f'output_dir = "{tmp_path / "out"}"\n'
        "[preview]\n"
        'format = "jpeg"\n'
        "[providers.openai]\n"
        "timeout_s = 45\n"
        'base_url = "http://127.0.0.1:9999/v1"\n'
    )
    monkeypatch.setenv("ATELIER_CONFIG", str(config))
    settings = Settings()
    assert settings.default_model == "offline"
    assert settings.output_dir == tmp_path / "out"
    assert settings.preview.format == "jpeg"
    assert settings.provider_values("openai") == {"timeout_s": 45, "base_url": "http://127.0.0.1:9999/v1"}


def test_precedence_arguments_then_environment_then_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "atelier.toml"
    config.write_text(
        'default_model = "from-file"\n'
        "[preview]\nmax_edge = 300\nmax_bytes = 90000\n"
        '[providers.openai]\ntimeout_s = 45\nbase_url = "http://file"\n'
    )
    monkeypatch.setenv("ATELIER_CONFIG", str(config))
    monkeypatch.setenv("ATELIER_DEFAULT_MODEL", "from-env")
    monkeypatch.setenv("ATELIER_PREVIEW__MAX_EDGE", "400")
    monkeypatch.setenv("ATELIER_PROVIDERS__OPENAI__TIMEOUT_S", "60")
    settings = Settings()
    assert settings.default_model == "from-env"
    # Environment beats the file key by key; untouched keys of the same table survive.
    assert settings.preview.max_edge == 400 and settings.preview.max_bytes == 90000
    assert settings.provider_values("openai") == {"timeout_s": "60", "base_url": "http://file"}
    assert Settings(default_model="from-argument").default_model == "from-argument"


def test_a_missing_config_file_is_fine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_CONFIG", str(tmp_path / "absent.toml"))
    assert Settings().default_model is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ATELIER_PREVIEW__FORMAT", "gif"),
        ("ATELIER_PREVIEW__MAX_EDGE", "4"),
        ("ATELIER_LOGGING__LEVEL", "chatty"),
        ("ATELIER_HTTP__PORT", "eighty"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    field = variable.removeprefix("ATELIER_").split("__")[-1].lower()
    assert field in str(caught.value)


def test_a_misspelled_key_in_a_section_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "atelier.toml"
    config.write_text('[storage]\noutput_dirr = "/tmp/x"\n')
    monkeypatch.setenv("ATELIER_CONFIG", str(config))
    with pytest.raises(ValidationError, match="output_dirr"):
        Settings()


# -- the documented example stays complete and valid ---------------------------------

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "atelier.example.toml"


def _documented_keys(text: str) -> set[str]:
    """Every ``key =`` in the example, commented out or not."""
    keys = set()
    for line in text.splitlines():
        stripped = line.lstrip("# ").strip()
        if "=" in stripped and not stripped.startswith("["):
            keys.add(stripped.split("=", 1)[0].strip().strip('"'))
    return keys


def test_example_config_documents_every_core_setting() -> None:
    keys = _documented_keys(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    for name, field in Settings.model_fields.items():
        if name == "providers":
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            assert f"[{name}]" in text, f"section [{name}] missing from {EXAMPLE.name}"
            missing = set(annotation.model_fields) - keys
            assert not missing, f"[{name}] settings missing from {EXAMPLE.name}: {sorted(missing)}"
        else:
            assert name in keys, f"{name} missing from {EXAMPLE.name}"


def test_example_config_documents_every_provider_setting() -> None:
    from atelier_core.engine.registry import build_registry
    from atelier_core.plugin.provider import ProviderSettings

    keys = _documented_keys(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    assert not set(ProviderSettings.model_fields) - keys
    registry = build_registry(Settings())
    for name, provider in registry.providers.items():
        assert f"[providers.{name}]" in text, f"[providers.{name}] missing from {EXAMPLE.name}"
        missing = set(provider.settings_class.model_fields) - keys
        assert not missing, f"providers.{name} settings missing from {EXAMPLE.name}: {sorted(missing)}"


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier_core.engine.registry import build_registry

    monkeypatch.setenv("ATELIER_CONFIG", str(EXAMPLE))
    settings = Settings()
    registry = build_registry(settings)
    failed = [r for r in registry.plugins if r.status == "failed" and "settings" in (r.error or "")]
    assert failed == []
    assert settings.preview.max_edge == 512 and settings.http.host == "127.0.0.1"


def test_configuration_doc_names_every_setting_and_variable() -> None:
    from atelier_core.engine.registry import build_registry
    from atelier_core.plugin.provider import ProviderSettings

    doc = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        if name == "providers":
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            for key in annotation.model_fields:
                assert f"`{key}`" in doc, f"{name}.{key} is not documented"
                assert f"`ATELIER_{name.upper()}__{key.upper()}`" in doc, f"variable for {name}.{key}"
        else:
            assert f"`ATELIER_{name.upper()}`" in doc
    for key in ProviderSettings.model_fields:
        assert f"`{key}`" in doc
    for provider_name, provider in build_registry(Settings()).providers.items():
        assert f"[providers.{provider_name}]" in doc
        for key in provider.settings_class.model_fields:
            assert f"`{key}`" in doc, f"providers.{provider_name}.{key} is not documented"
