"""Pure translation: specs, settings, request kwargs, answer parsing, error mapping."""

from __future__ import annotations

import base64
import dataclasses
from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest
from dalle_support import make_provider

import atelier_dalle
from atelier_core import (
    AuthenticationError,
    ConfigurationError,
    ImageRequest,
    InputImage,
    Operation,
    QuotaExceededError,
    RateLimitedError,
    RetiredModelError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailableError,
)
from atelier_core.engine.registry import ModelEntry
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.types import ImageCall
from atelier_core.settings import Settings
from atelier_core.testing import build_test_registry, make_image, make_mask
from atelier_dalle import DALL_E_2, DALL_E_3, DalleProvider, DalleSettings
from atelier_dalle.errors import Target, map_status, parse_retry_after
from atelier_dalle.models import BUILTIN, build_extra
from atelier_dalle.translate import decode_b64, parse_response, request_kwargs, sniff_mime

PNG = make_image(8, 8)


def _validated(
    provider: DalleProvider,
    model: str,
    operation: Operation = Operation.GENERATE,
    images: list[InputImage] | None = None,
    mask: InputImage | None = None,
    **call: Any,
) -> ImageRequest:
    spec = next(s for s in provider.catalog() if s.id == model)
    entry = ModelEntry(f"dalle/{model}", spec, provider, "dalle")
    return validate_call(ImageCall(model=model, **call), entry, operation, images or [], mask).request


def _kwargs(provider: DalleProvider, request: ImageRequest, fmt: str = "b64_json") -> dict[str, Any]:
    wire = provider._wire(request.model)
    return request_kwargs(request, wire, response_format=fmt, upstream_model=wire.upstream_model)  # type: ignore[arg-type]


def _input(size: int = 64, *, fmt: str = "png", alpha: bool = False) -> InputImage:
    data = make_image(size, size, fmt, alpha=alpha)
    return InputImage(data=data, format=fmt, width=size, height=size, has_alpha=alpha, source=f"in.{fmt}")


# -- specs ---------------------------------------------------------------------------


def test_builtin_specs_state_the_api_limits() -> None:
    assert DALL_E_3.sizes.presets == ("1024x1024", "1792x1024", "1024x1792")
    assert (DALL_E_3.qualities, DALL_E_3.styles) == (("standard", "hd"), ("vivid", "natural"))
    assert (DALL_E_3.n_native_max, DALL_E_3.prompt_max_chars) == (1, 4000)
    assert DALL_E_3.returns_revised_prompt and DALL_E_3.operations == {Operation.GENERATE}
    assert DALL_E_2.sizes.presets == ("256x256", "512x512", "1024x1024")
    assert (DALL_E_2.n_max, DALL_E_2.native_batch, DALL_E_2.prompt_max_chars) == (10, 10, 1000)
    assert DALL_E_2.operations == {Operation.GENERATE, Operation.EDIT, Operation.VARIATION}
    assert DALL_E_2.input_images is not None and DALL_E_2.input_images.must_be_square
    assert DALL_E_2.input_images.max_count == 1 and DALL_E_2.input_images.mask is not None
    assert Operation.VARIATION not in DALL_E_2.prompt_required_for


def test_prices_are_dated_and_sized() -> None:
    provider = make_provider(api_key="k")
    hd_wide = _validated(provider, "dall-e-3", prompt="p", size="1792x1024", quality="hd", n=2)
    assert provider.estimate_cost(hd_wide, DALL_E_3) == pytest.approx(0.24)
    default = _validated(provider, "dall-e-3", prompt="p")
    assert provider.estimate_cost(default, DALL_E_3) == pytest.approx(0.04)
    small = _validated(provider, "dall-e-2", prompt="p", size="256x256", n=10)
    assert provider.estimate_cost(small, DALL_E_2) == pytest.approx(0.16)
    for spec in (DALL_E_2, DALL_E_3):
        assert spec.pricing is not None and spec.pricing.as_of == "2023-11-06"
        assert "2026-05-12" in spec.pricing.source


# -- settings ------------------------------------------------------------------------


def test_own_settings_win_over_openai_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai-proxy.invalid/v1")
    fallback = build_test_registry([atelier_dalle], settings=Settings()).providers["dalle"]
    assert isinstance(fallback.settings, DalleSettings)
    assert fallback.settings.api_key is not None
    assert fallback.settings.api_key.get_secret_value() == "sk-openai"
    assert fallback.settings.base_url == "http://openai-proxy.invalid/v1"

    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__API_KEY", "sk-own")
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__BASE_URL", "http://localai.invalid:8080/v1")
    own = build_test_registry([atelier_dalle], settings=Settings()).providers["dalle"]
    assert isinstance(own.settings, DalleSettings)
    assert own.settings.api_key is not None and own.settings.api_key.get_secret_value() == "sk-own"
    assert own.settings.base_url == "http://localai.invalid:8080/v1"
    # The class alone (no core in front) reads its own variable first too.
    assert DalleSettings().api_key.get_secret_value() == "sk-own"  # type: ignore[union-attr]


def test_keyless_server_is_available_only_when_declared() -> None:
    needs = make_provider(base_url="http://127.0.0.1:9/v1")
    reason = needs.unavailable_reason(DALL_E_3)
    assert reason and "ATELIER_PROVIDERS__DALLE__API_KEY" in reason and "NEEDS_KEY=false" in reason
    keyless = make_provider(base_url="http://127.0.0.1:9/v1", needs_key=False)
    assert keyless.unavailable_reason(DALL_E_3) is None
    assert make_provider(api_key="k", enabled=False).unavailable_reason(DALL_E_3)


def test_azure_mode_uses_the_azure_key_and_names_its_variables() -> None:
    provider = make_provider(api_key="sk-openai", azure_endpoint="https://res.openai.azure.com", azure_api_key="az-key")
    settings = provider.settings
    assert settings.azure and not settings.is_openai_api
    assert settings.effective_key is not None and settings.effective_key.get_secret_value() == "az-key"
    assert "AZURE_OPENAI_API_KEY" in settings.key_variables()
    no_key = make_provider(azure_endpoint="https://res.openai.azure.com")
    assert "AZURE_OPENAI_API_KEY" in (no_key.unavailable_reason(DALL_E_3) or "")


def test_base_url_and_azure_endpoint_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="both base_url and azure_endpoint"):
        make_provider(base_url="http://a/v1", azure_endpoint="https://b.openai.azure.com")


def test_openai_api_is_detected() -> None:
    assert make_provider().settings.is_openai_api
    assert make_provider(base_url="https://api.openai.com/v1").settings.is_openai_api
    assert not make_provider(base_url="http://localhost:8080/v1").settings.is_openai_api


# -- extra models --------------------------------------------------------------------

SD = {
    "upstream_model": "stablediffusion",
    "sizes": ["256x256", "512x512"],
    "n_max": 4,
    "n_native_max": 1,
    "operations": ["generate", "edit"],
    "prompt_max_chars": 500,
    "response_format": "url",
    "price_per_image": 0.0,
    "qualities": "draft, final",
    "extra_body": {"step": 25},
}


def test_catalog_is_builtins_plus_configured_extras() -> None:
    provider = make_provider(api_key="k", models={"sd": SD})
    ids = [spec.id for spec in provider.catalog()]
    assert ids == ["dall-e-3", "dall-e-2", "sd"]
    sd = provider.catalog()[2]
    assert sd.sizes.presets == ("256x256", "512x512") and sd.sizes.default == "256x256"
    assert (sd.n_max, sd.native_batch, sd.prompt_max_chars) == (4, 1, 500)
    assert sd.qualities == ("draft", "final")
    assert sd.operations == {Operation.GENERATE, Operation.EDIT}
    assert sd.pricing is not None and sd.pricing.per_image == 0.0 and sd.pricing.as_of == date.today().isoformat()
    wire = provider._wire("sd")
    assert wire.upstream_model == "stablediffusion" and wire.response_format == "url"
    only = make_provider(api_key="k", builtin_models=[], models={"sd": SD})
    assert [s.id for s in only.catalog()] == ["sd"]


def test_extra_model_with_a_builtin_id_replaces_it() -> None:
    provider = make_provider(api_key="k", models={"dall-e-3": {"sizes": ["512x512"], "n_max": 2}})
    spec = next(s for s in provider.catalog() if s.id == "dall-e-3")
    assert spec.sizes.presets == ("512x512",) and spec.n_max == 2


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"n_max": 0}, r"models\.bad\.n_max = 0 .*greater than or equal to 1"),
        ({"sizez": ["1x1"]}, r"models\.bad\.sizez .*not a known setting"),
        ({"operations": ["paint"]}, r"models\.bad\.operations"),
        ({"n_max": 2, "n_native_max": 3}, r"n_native_max 3 exceeds n_max 2"),
        ({"sizes": ["big"]}, r"is inconsistent: .*not WxH"),
        ({"sizes": ["512x512"], "default_size": "256x256"}, r"default_size = '256x256' is not one of"),
        ("not a table", r"is not a table"),
    ],
)
def test_bad_extra_model_config_is_a_clear_configuration_error(raw: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as caught:
        build_extra("bad", raw)
    assert "providers.dalle.models.bad" in str(caught.value)


def test_bad_extra_model_fails_the_plugin_load_with_the_reason() -> None:
    registry = build_test_registry([atelier_dalle], providers={"dalle": {"models": {"x": {"n_max": -1}}}})
    (record,) = registry.plugins
    assert record.status == "failed" and "providers.dalle.models.x.n_max" in (record.error or "")
    unknown = build_test_registry([atelier_dalle], providers={"dalle": {"builtin_models": ["dall-e-4"]}})
    assert "dall-e-4" in (unknown.plugins[0].error or "")


# -- request kwargs ------------------------------------------------------------------


def test_dall_e_3_generate_kwargs() -> None:
    provider = make_provider(api_key="k")
    request = _validated(provider, "dall-e-3", prompt="a fox", size="1024x1792", quality="hd", style="natural")
    assert _kwargs(provider, request) == {
        "model": "dall-e-3",
        "n": 1,
        "prompt": "a fox",
        "size": "1024x1792",
        "response_format": "b64_json",
        "quality": "hd",
        "style": "natural",
    }
    default = _validated(provider, "dall-e-3", prompt="a fox")
    assert _kwargs(provider, default, "url") == {
        "model": "dall-e-3",
        "n": 1,
        "prompt": "a fox",
        "size": "1024x1024",
        "response_format": "url",
        "quality": "standard",
    }


def test_dall_e_2_generate_edit_and_variation_kwargs() -> None:
    provider = make_provider(api_key="k")
    gen = _validated(provider, "dall-e-2", prompt="a fox", size="512x512", n=3)
    assert _kwargs(provider, gen, "omit") == {"model": "dall-e-2", "n": 3, "prompt": "a fox", "size": "512x512"}
    image = _input(64)
    edit = _validated(provider, "dall-e-2", Operation.EDIT, [image], None, prompt="hat", n=2, size="256x256")
    assert _kwargs(provider, edit) == {
        "model": "dall-e-2",
        "n": 2,
        "prompt": "hat",
        "size": "256x256",
        "response_format": "b64_json",
    }
    var = _validated(provider, "dall-e-2", Operation.VARIATION, [image], None, n=2)
    assert _kwargs(provider, var) == {"model": "dall-e-2", "n": 2, "size": "1024x1024", "response_format": "b64_json"}


def test_dall_e_2_refuses_dall_e_3_parameters_before_any_call() -> None:
    provider = make_provider(api_key="k")
    for call in ({"quality": "hd"}, {"style": "vivid"}, {"size": "1792x1024"}, {"n": 11}):
        with pytest.raises(Exception, match="dall-e-2") as caught:
            _validated(provider, "dall-e-2", prompt="p", **call)
        assert type(caught.value).__name__ == "InvalidParameterError"
    with pytest.raises(Exception, match="at most 4000"):
        _validated(provider, "dall-e-3", prompt="x" * 4001)
    with pytest.raises(Exception, match="at most 1000"):
        _validated(provider, "dall-e-2", prompt="x" * 1001)


def test_extra_model_kwargs_use_its_upstream_name_and_extra_body() -> None:
    provider = make_provider(api_key="k", models={"sd": SD}, deployments={"dall-e-3": "my-dalle"})
    request = _validated(provider, "sd", prompt="p", quality="final", n=1)
    wire = provider._wire("sd")
    kwargs = request_kwargs(request, wire, response_format="url", upstream_model=provider._upstream_name("sd", wire))
    assert kwargs == {
        "model": "stablediffusion",
        "n": 1,
        "prompt": "p",
        "size": "256x256",
        "response_format": "url",
        "quality": "final",
        "extra_body": {"step": 25},
    }
    assert provider._upstream_name("dall-e-3", provider._wire("dall-e-3")) == "my-dalle"
    multi = make_provider(api_key="k", models={"m": {"output_formats": ["png", "jpeg"]}})
    jpeg = _validated(multi, "m", prompt="p", output_format="jpeg")
    assert _kwargs(multi, jpeg)["output_format"] == "jpeg"


# -- answers -------------------------------------------------------------------------


def _parse(payload: Any) -> Any:
    import json

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_response(body, model="dalle/dall-e-2", base_url="http://h:1/v1", provider="dalle")


def test_parse_b64_url_relative_url_data_url_and_revised_prompt() -> None:
    b64 = base64.b64encode(PNG).decode()
    items = _parse(
        {
            "data": [
                {"b64_json": b64, "revised_prompt": "a red fox"},
                {"url": "https://cdn.example/x.png"},
                {"url": "/generated/y.png"},
                {"url": f"data:image/png;base64,{b64}"},
                {"b64_json": "@@not base64@@"},
                {},
            ]
        }
    )
    assert items[0].data == PNG and items[0].revised_prompt == "a red fox"
    assert items[1].url == "https://cdn.example/x.png"
    assert items[2].url == "http://h:1/generated/y.png"
    assert items[3].data == PNG
    assert items[4].problem and "bad base64" in items[4].problem
    assert items[5].problem and "neither b64_json nor url" in items[5].problem


@pytest.mark.parametrize(
    ("payload", "error", "match"),
    [
        (b"<html>502</html>", UpstreamProtocolError, "not JSON"),
        ({"data": []}, UpstreamProtocolError, "no image"),
        ({"created": 1}, UpstreamProtocolError, "no image"),
        ([1, 2], UpstreamProtocolError, "not an object"),
        ({"error": {"message": "model crashed"}}, UpstreamProtocolError, "model crashed"),
        ({"error": {"code": "content_policy_violation", "message": "no"}}, SafetyRefusalError, "no"),
    ],
)
def test_answers_without_images_are_errors(payload: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _parse(payload)


def test_strict_base64() -> None:
    assert decode_b64(base64.b64encode(PNG).decode()) == PNG
    assert decode_b64(" " + base64.b64encode(PNG).decode()[:8] + "\n" + base64.b64encode(PNG).decode()[8:]) == PNG
    for bad in ("", "abc", "ab$d", base64.b64encode(PNG).decode()[:-1], "ü" * 4):
        with pytest.raises(ValueError):
            decode_b64(bad)


def test_sniff_mime() -> None:
    assert sniff_mime(PNG) == "image/png"
    assert sniff_mime(make_image(4, 4, "jpeg")) == "image/jpeg"
    assert sniff_mime(make_image(4, 4, "webp")) == "image/webp"
    assert sniff_mime(b"nope") is None


# -- error mapping -------------------------------------------------------------------

TARGET = Target(
    model="dalle/dall-e-3",
    upstream_model="dall-e-3",
    server="http://127.0.0.1:9/v1",
    is_openai_api=False,
    azure=False,
    retired_by_openai=True,
    key_variables=("ATELIER_PROVIDERS__DALLE__API_KEY", "OPENAI_API_KEY"),
    timeout_s=5,
)


def _status(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    error = body if isinstance(body, dict) else None
    return SimpleNamespace(
        status_code=status,
        body=body,
        code=(error or {}).get("code"),
        type=(error or {}).get("type"),
        param=(error or {}).get("param"),
        request_id="req_1",
        response=SimpleNamespace(headers=headers or {}),
        message=f"Error code: {status}",
    )


def test_status_mapping() -> None:
    limited = map_status(_status(429, {"code": "rate_limit_exceeded", "message": "slow"}, {"retry-after": "7"}), TARGET)
    assert isinstance(limited, RateLimitedError) and limited.retryable and limited.retry_after_s == 7
    quota = map_status(_status(429, {"code": "insufficient_quota", "message": "pay"}), TARGET)
    assert isinstance(quota, QuotaExceededError) and not quota.retryable
    auth = map_status(_status(401, {"message": "bad key"}), TARGET)
    assert isinstance(auth, AuthenticationError) and "ATELIER_PROVIDERS__DALLE__API_KEY" in str(auth)
    assert isinstance(map_status(_status(403, {"message": "region"}), TARGET), AuthenticationError)
    down = map_status(_status(503, "overloaded"), TARGET)
    assert isinstance(down, UpstreamUnavailableError) and down.retryable and "overloaded" in str(down)
    bad = map_status(_status(400, {"message": "size is wrong", "param": "size"}), TARGET)
    assert type(bad) is UpstreamError and bad.parameter == "size" and not bad.retryable
    assert bad.request_id == "req_1"


def test_safety_refusals_quote_the_reason() -> None:
    openai_style = map_status(
        _status(
            400,
            {
                "code": "content_policy_violation",
                "message": "Your request was rejected as a result of our safety system.",
            },
        ),
        TARGET,
    )
    assert isinstance(openai_style, SafetyRefusalError) and "rejected as a result of our safety system" in str(
        openai_style
    )
    azure_style = map_status(
        _status(
            400,
            {
                "code": "content_policy_violation",
                "message": "blocked",
                "inner_error": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_results": {"violence": {"filtered": True}, "hate": {"filtered": False}},
                },
            },
        ),
        TARGET,
    )
    assert isinstance(azure_style, SafetyRefusalError) and "filtered: violence" in str(azure_style)
    assert not azure_style.retryable


def test_missing_model_messages() -> None:
    body = {"code": "model_not_found", "message": "The model `dall-e-3` does not exist"}
    on_openai = map_status(_status(404, body), dataclasses.replace(TARGET, is_openai_api=True))
    assert isinstance(on_openai, RetiredModelError)
    text = str(on_openai)
    assert "retired by OpenAI on 2026-05-12" in text and "openai/gpt-image-2" in text
    custom = map_status(_status(404, body), TARGET)
    assert type(custom) is UpstreamError and custom.code == "model_not_found"
    assert "does not serve model 'dall-e-3'" in str(custom) and "retired" not in str(custom)
    azure = map_status(
        _status(404, {"code": "DeploymentNotFound", "message": "The API deployment does not exist"}),
        dataclasses.replace(TARGET, azure=True, upstream_model="dalle3-prod"),
    )
    assert "Azure deployment 'dalle3-prod'" in str(azure) and "deployments" in str(azure)
    route = map_status(_status(404, {"message": "Not Found"}), TARGET)
    assert route.code == "endpoint_not_found"
    deprecated = map_status(
        _status(400, {"message": "The model dall-e-2 has been deprecated"}),
        dataclasses.replace(TARGET, is_openai_api=True),
    )
    assert isinstance(deprecated, RetiredModelError)
    localai = map_status(_status(500, {"message": "model stablediffusion not found"}), TARGET)
    assert localai.code == "model_not_found" and not localai.retryable
    assert isinstance(
        map_status(_status(500, {"message": "could not load model: OOM"}), TARGET), UpstreamUnavailableError
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "Thu, 01 Jan 2026 00:00:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1767225600.0  # 2026-01-01T00:00:00Z
    assert parse_retry_after(headers, now=now) == expected


def test_mask_rules_reach_the_core() -> None:
    provider = make_provider(api_key="k")
    image = _input(64)
    mask = InputImage(data=make_mask(64, 64), format="png", width=64, height=64, has_alpha=True, source="m.png")
    request = _validated(provider, "dall-e-2", Operation.EDIT, [image], mask, prompt="p")
    assert request.mask is mask
    wrong = InputImage(data=make_mask(32, 32), format="png", width=32, height=32, has_alpha=True, source="m.png")
    with pytest.raises(Exception, match="mask is 32x32 but the image is 64x64"):
        _validated(provider, "dall-e-2", Operation.EDIT, [image], wrong, prompt="p")
    wide = InputImage(data=make_image(64, 32), format="png", width=64, height=32, has_alpha=False, source="w.png")
    with pytest.raises(Exception, match="square"):
        _validated(provider, "dall-e-2", Operation.EDIT, [wide], None, prompt="p")
    assert set(BUILTIN) == {"dall-e-2", "dall-e-3"}


# -- the docs' examples load -------------------------------------------------------------


def test_docs_toml_examples_load(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    from pathlib import Path

    from atelier_core.engine.registry import build_registry

    page = Path(__file__).parents[3] / "docs" / "providers" / "dalle.md"
    blocks = re.findall(r"```toml\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) == 2
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    loaded = []
    for index, block in enumerate(blocks):
        config = tmp_path / f"atelier-{index}.toml"
        config.write_text(block)
        monkeypatch.setenv("ATELIER_CONFIG", str(config))
        registry = build_registry(Settings(), plugins=[("dalle", atelier_dalle)], entry_points=False)
        assert registry.plugins[0].status == "loaded", registry.plugins[0].error
        available = sorted(e.canonical_id for e in registry.entries() if e.unavailable_reason() is None)
        loaded.append(available)
    assert loaded == [["dalle/flux-schnell", "dalle/stablediffusion"], ["dalle/dall-e-3"]]


def test_extra_model_declared_in_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__BASE_URL", "http://127.0.0.1:8080/v1")
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__NEEDS_KEY", "false")
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__BUILTIN_MODELS", "[]")
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__MODELS__SD__SIZES", "256x256, 512x512")
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__MODELS__SD__N_MAX", "3")
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__MODELS__SD__OPERATIONS", "generate,variation")
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__DEPLOYMENTS__SD", "sd-v1.5")
    monkeypatch.setenv("ATELIER_PROVIDERS__DALLE__DOWNLOAD_HOSTS", '["cdn.local", "img.local"]')
    registry = build_test_registry([atelier_dalle], settings=Settings())
    entry = registry.resolve("dalle/sd")
    assert entry.unavailable_reason() is None and list(registry.models) == ["dalle/sd"]
    assert entry.spec.sizes.presets == ("256x256", "512x512") and entry.spec.n_max == 3
    assert entry.spec.operations == {Operation.GENERATE, Operation.VARIATION}
    provider = registry.providers["dalle"]
    assert isinstance(provider, DalleProvider)
    assert provider._upstream_name("sd", provider._wire("sd")) == "sd-v1.5"
    assert provider._download_hosts() == ["http://127.0.0.1:8080/v1", "cdn.local", "img.local"]
