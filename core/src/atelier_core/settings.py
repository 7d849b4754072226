"""Core settings: ``ATELIER_*`` variables (``__`` nests), a TOML file, then defaults.

Precedence, highest first: keyword arguments, environment (``ATELIER_…``), the TOML
file (``$ATELIER_CONFIG``, else ``<user config dir>/atelier/atelier.toml``), defaults.
Every setting is documented in ``config/atelier.example.toml`` and docs/configuration.md.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "CostSettings",
    "ExplicitSettings",
    "HttpSettings",
    "JobSettings",
    "LibrarySettings",
    "LoggingSettings",
    "PluginSettings",
    "PreviewSettings",
    "SessionSettings",
    "Settings",
    "StateSettings",
    "StorageSettings",
    "config_path",
    "unknown_setting_warnings",
]

APP = "atelier"


def config_path() -> Path:
    """Where the TOML config file is read from."""
    explicit = os.environ.get("ATELIER_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_config_dir(APP)) / "atelier.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageSettings(_Section):
    output_dir: Path | None = Field(
        None, description="where images are written; default <user data dir>/atelier/images"
    )
    input_dirs: list[Path] = Field(default_factory=list, description="extra directories input images may be read from")
    allow_remote_inputs: bool = Field(False, description="allow https:// input image URLs")
    remote_timeout_s: float = 20.0
    remote_max_bytes: int = 20 * 1024 * 1024
    max_input_bytes: int = 50 * 1024 * 1024
    max_input_pixels: int = 40_000_000
    max_call_input_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="total bytes of all input images (and mask) of one call"
    )
    max_call_input_pixels: int = Field(
        100_000_000, ge=1, description="total pixels of all input images (and mask) of one call"
    )
    max_resource_bytes: int = Field(
        # Comfortably above the largest image a provider may return: the answer cap for a
        # 4096 x 4096 PNG (ImageRequest.max_image_bytes, about 70 MB).
        96 * 1024 * 1024,
        ge=1,
        description="resources/read refuses files larger than this",
    )
    file_mode: int = 0o644
    url: str | None = Field(
        None,
        description="s3://bucket/prefix: also keep every image in an S3-compatible bucket "
        "(credentials and region from the AWS_* variables)",
    )
    endpoint_url: str | None = Field(None, description="the S3 endpoint for a non-AWS server (MinIO, Ceph, R2 …)")
    presign_ttl_s: float = Field(0.0, ge=0, le=7 * 86400, description="add pre-signed GET URLs to results (0 = off)")


class PreviewSettings(_Section):
    max_edge: int = Field(512, ge=16, le=4096)
    max_bytes: int = Field(150_000, ge=4_000)
    format: Literal["auto", "webp", "jpeg"] = "auto"  # auto: JPEG, or WebP when there is transparency
    default: Literal["preview", "full", "none"] = "preview"
    max_full_inline_bytes: int = Field(
        750_000, description="'full' inline images above this are downscaled (client limits)"
    )


class PluginSettings(_Section):
    allow: list[str] | None = Field(None, description="load only these plugins (None = all)")
    block: list[str] = Field(default_factory=list, description="never load these plugins")
    strict: bool = Field(False, description="a plugin that fails to load stops start-up")
    trace: bool = Field(
        False, description="log plugin loading, every hook call and the traceback of a plugin that fails to load"
    )
    owners: dict[str, str] = Field(
        default_factory=dict,
        description="provider name -> the distribution that owns it, when two third-party "
        "distributions claim one name (built-in names are never given away)",
    )
    loop_block_s: float = Field(
        1.0, gt=0, description="log the provider that holds the event loop longer than this (seconds)"
    )


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["console", "json"] = "console"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/mcp"
    auth_token: SecretStr | None = Field(None, description="one bearer token for every caller (principal 'default')")
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="principal → bearer token (JSON in ATELIER_HTTP__TOKENS); each principal "
        "has its own jobs, sessions, images, usage and spend limits",
    )
    oauth_issuer: str | None = Field(None, description="accept OAuth 2.1 JWTs from this issuer")
    oauth_jwks_url: str | None = Field(None, description="the issuer's JWKS (signing keys) URL")
    oauth_audience: str | None = Field(None, description="the `aud` the tokens must carry")
    allowed_hosts: list[str] = Field(default_factory=list, description="extra Host values")
    allowed_origins: list[str] = Field(default_factory=list, description="extra Origin values")
    max_body_bytes: int = 4 * 1024 * 1024
    stateless: bool = Field(
        False,
        description="answer every request on its own (no MCP session kept in memory), so any "
        "replica behind a load balancer can take any request; the server cannot ask the user "
        "(elicitation) in this mode",
    )


class JobSettings(_Section):
    handoff_after_s: float = Field(
        45.0, description="a synchronous call still running after this returns a job id (0 = never)"
    )
    retention_days: float = 30.0
    delete_files_on_prune: bool = False
    lease_s: float = 30.0


class StateSettings(_Section):
    url: SecretStr | None = Field(
        None,
        description="the state database: postgresql://user:password@host/db for a team server "
        "(several replicas share jobs, sessions, the ledger and spend limits), sqlite:///path; "
        "default the SQLite file <data dir>/state.sqlite3",
    )
    pool_size: int = Field(5, ge=1, description="PostgreSQL connections kept open per process")


class SessionSettings(_Section):
    max_sessions: int = Field(200, description="LRU cap on open sessions (0 = unlimited)")
    idle_ttl_s: float = Field(7 * 86400, description="end sessions idle this long (0 = never)")


class LibrarySettings(_Section):
    embed_metadata: bool = Field(
        True, description="write prompt, model, parameters and the IPTC AI source type into each file"
    )
    max_total_bytes: int | None = Field(
        None, ge=0, description="retention: prune the oldest images above this total (None = no limit)"
    )
    max_age_days: float | None = Field(None, gt=0, description="retention: prune images older than this (None = keep)")


class CostSettings(_Section):
    max_per_call_usd: float | None = None
    max_per_day_usd: float | None = None
    max_per_run_usd: float | None = None
    ask_above_usd: float | None = Field(
        None, description="ask the user (MCP elicitation) before calls estimated above this"
    )
    allow_unpriced: bool = Field(False, description="with limits set, allow calls to models without a known price")
    prices: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="price overrides per canonical model id"
    )


class Settings(BaseSettings):
    """All of Atelier's own settings. Provider settings live under ``providers.<name>``."""

    model_config = SettingsConfigDict(
        env_prefix="ATELIER_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
    )

    data_dir: Path | None = Field(None, description="state: job database, sessions, ledger")
    default_model: str | None = None
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict,
        description="canonical model id → models to try next, in order, when it is rate-limited or "
        "unavailable and nothing was billed (opt-in per model)",
    )
    storage: StorageSettings = Field(default_factory=StorageSettings)
    preview: PreviewSettings = Field(default_factory=PreviewSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    cost: CostSettings = Field(default_factory=CostSettings)
    library: LibrarySettings = Field(default_factory=LibrarySettings)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def resolved_data_dir(self) -> Path:
        return (self.data_dir or Path(platformdirs.user_data_dir(APP))).expanduser()

    @property
    def output_dir(self) -> Path:
        return (self.storage.output_dir or self.resolved_data_dir / "images").expanduser()

    def provider_values(self, name: str) -> dict[str, Any]:
        """The raw ``providers.<name>`` table (env merged over TOML)."""
        return dict(self.providers.get(name.lower(), {}))


def _closest(name: str, known: list[str]) -> str | None:
    found = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return found[0] if found else None


def unknown_setting_warnings() -> list[str]:
    """One line per top-level name that sets nothing and is therefore ignored.

    Sections forbid unknown keys (start-up stops, naming the key), but the top level must
    ignore them: every ``ATELIER_*`` variable lands there. So: each unknown top-level key of
    the config file, with the closest known key; each ``ATELIER_*`` variable that looks like
    a misspelt setting (only those: tools may set their own ``ATELIER_*`` variables).
    """
    known = sorted(Settings.model_fields)
    warnings = []
    path = config_path()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        table = {}  # Settings() itself reports an unreadable file
    for key in table:
        if key not in known:
            closest = _closest(key, known)
            hint = f"did you mean {closest!r}?" if closest else f"known keys: {', '.join(known)}"
            warnings.append(f"{path}: unknown key {key!r} is ignored; {hint}")
    variables = [f"ATELIER_{key.upper()}" for key in known]
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith("ATELIER_") or upper == "ATELIER_CONFIG":
            continue
        head = upper.split("__", 1)[0]
        closest = None if head in variables else _closest(head, variables)
        if closest:
            warnings.append(f"environment: {name} sets nothing and is ignored; did you mean {closest}?")
    return warnings


class ExplicitSettings(Settings):
    """Settings from keyword arguments only: no ``ATELIER_*`` variables, no config file.

    For tests and generated documentation, which must not depend on the machine.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
