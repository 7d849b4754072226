"""Settings, availability, model checks, size mapping and cost — no network."""

from __future__ import annotations

from typing import Any

import pytest

import atelier_gemini
from atelier_core import InputImage, InvalidParameterError, Operation
from atelier_core.engine.registry import ModelEntry, build_registry
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.types import ImageCall
from atelier_core.settings import Settings
from atelier_core.testing import configured, make_image, make_mask
from atelier_gemini import GeminiProvider


def _provider(**settings: Any) -> GeminiProvider:
    provider = configured(GeminiProvider(), **settings)
    assert isinstance(provider, GeminiProvider)
    return provider


def _validate(
    provider: GeminiProvider,
    model: str,
    operation: Operation = Operation.GENERATE,
    images: tuple[InputImage, ...] = (),
    mask: InputImage | None = None,
    **call: Any,
) -> Any:
    spec = next(s for s in provider.catalog() if s.id == model)
    entry = ModelEntry(f"gemini/{model}", spec, provider, "gemini")
    return validate_call(ImageCall(model=model, prompt="a fox", **call), entry, operation, list(images), mask)


def _spec(provider: GeminiProvider, model: str) -> Any:
    return next(s for s in provider.catalog() if s.id == model)


# -- settings and backends -----------------------------------------------------------


def test_google_api_key_wins_over_gemini_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "from-gemini")
    registry = build_registry(Settings(), plugins=[("gemini", atelier_gemini)], entry_points=False)
    provider = registry.providers["gemini"]
    assert provider.settings.api_key is not None
    assert provider.settings.api_key.get_secret_value() == "from-gemini"
    monkeypatch.setenv("GOOGLE_API_KEY", "from-google")
    registry = build_registry(Settings(), plugins=[("gemini", atelier_gemini)], entry_points=False)
    assert registry.providers["gemini"].settings.api_key.get_secret_value() == "from-google"  # type: ignore[union-attr]
    assert registry.resolve("nano-banana").canonical_id == "gemini/gemini-2.5-flash-image"
    assert registry.resolve("nano-banana-pro").canonical_id == "gemini/gemini-3-pro-image"
    assert registry.resolve("nano-banana-2").canonical_id == "gemini/gemini-3.1-flash-image"


def test_atelier_variables_and_vertex_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_PROVIDERS__GEMINI__API_KEY", "atelier-key")
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "proj")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    registry = build_registry(Settings(), plugins=[("gemini", atelier_gemini)], entry_points=False)
    provider = registry.providers["gemini"]
    assert isinstance(provider, GeminiProvider) and provider.vertex
    assert provider.settings.project == "proj" and provider.settings.location == "us-central1"
    assert provider.settings.api_key.get_secret_value() == "atelier-key"  # type: ignore[union-attr]
    assert all(e.unavailable_reason() is None for e in registry.entries(provider="gemini"))
    assert provider.describe()["backend"] == "vertex-ai"


def test_developer_client_sends_key_header_and_timeout_in_ms() -> None:
    client = _provider(api_key="k1", timeout_s=2.5)._build_client()
    api = client._api_client
    assert not api.vertexai
    assert api._http_options.timeout == 2500
    assert api._http_options.headers["x-goog-api-key"] == "k1"
    assert api._http_options.retry_options is None  # google-genai then makes exactly one attempt
    assert api._http_options.base_url == "https://generativelanguage.googleapis.com/"
    assert api._async_httpx_client._transport.inner._pool._max_keepalive_connections == 0


def test_vertex_adc_client_uses_project_and_location_without_loading_credentials() -> None:
    client = _provider(vertexai=True, project="p", location="europe-west4")._build_client()
    api = client._api_client
    assert api.vertexai and api.project == "p" and api.location == "europe-west4"
    assert api._http_options.base_url == "https://europe-west4-aiplatform.googleapis.com/"
    assert "x-goog-api-key" not in api._http_options.headers


def test_gateway_base_url_and_api_version() -> None:
    api = (
        _provider(api_key="k", base_url="https://gw.example/gemini/", api_version="v1beta")._build_client()._api_client
    )
    assert api._http_options.base_url == "https://gw.example/gemini/"
    assert api._http_options.api_version == "v1beta"


# -- availability --------------------------------------------------------------------


def test_unavailable_reasons() -> None:
    flash = _spec(GeminiProvider(), "gemini-2.5-flash-image")
    imagen = _spec(GeminiProvider(), "imagen-4.0-generate-001")
    assert "GOOGLE_API_KEY" in (_provider().unavailable_reason(flash) or "")
    assert _provider(api_key="k").unavailable_reason(flash) is None
    reason = _provider(api_key="k").unavailable_reason(imagen) or ""
    assert (
        "needs Vertex AI" in reason and "GOOGLE_GENAI_USE_VERTEXAI=true" in reason and "GOOGLE_CLOUD_PROJECT" in reason
    )
    assert "GOOGLE_CLOUD_PROJECT" in (_provider(vertexai=True).unavailable_reason(imagen) or "")
    assert _provider(vertexai=True, project="p").unavailable_reason(imagen) is None
    assert _provider(vertexai=True, api_key="express").unavailable_reason(imagen) is None
    assert "disabled" in (_provider(api_key="k", enabled=False).unavailable_reason(flash) or "")


# -- sizes: requested WxH → ratio and tier, reported -----------------------------------


@pytest.mark.parametrize(
    ("model", "size", "ratio", "tier"),
    [
        ("gemini-3-pro-image", "2752x1536", "16:9", "2K"),  # exact: declared output size
        ("gemini-3-pro-image", "1920x1080", "16:9", "2K"),  # nearest ratio, tier by long edge
        ("gemini-3-pro-image", "1024x1024", "1:1", "1K"),
        ("gemini-3-pro-image", "4096x4096", "1:1", "4K"),
        ("gemini-3.1-flash-image", "800x1200", "2:3", "1K"),
        ("gemini-2.5-flash-image", "1344x768", "16:9", None),  # single-tier model: no tier sent
        ("imagen-4.0-generate-001", "1280x960", "4:3", "1K"),
    ],
)
def test_pixel_size_maps_to_ratio_and_tier(model: str, size: str, ratio: str, tier: str | None) -> None:
    validated = _validate(_provider(api_key="k", vertexai=True), model, size=size)
    assert (validated.request.aspect_ratio, validated.request.resolution) == (ratio, tier)
    assert validated.requested["size"] == size
    assert validated.applied["aspect_ratio"] == ratio
    assert any(size in note for note in validated.notes)


def test_size_without_an_honest_ratio_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(InvalidParameterError) as caught:
        _validate(_provider(api_key="k"), "gemini-3-pro-image", size="1000x300")
    assert "21:9" in str(caught.value) and caught.value.parameter == "size"


def test_tier_refused_on_single_tier_model() -> None:
    with pytest.raises(InvalidParameterError):
        _validate(_provider(api_key="k"), "gemini-2.5-flash-image", resolution="4K")


# -- model checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        {"output_format": "jpeg"},
        {"output_format": "jpeg", "output_compression": 20},
        {"options": {"person_generation": "ALLOW_ADULT"}},
        {"options": {"prominent_people": "BLOCK_PROMINENT_PEOPLE"}},
    ],
)
def test_vertex_only_options_refused_on_developer_api(call: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        _validate(_provider(api_key="k"), "gemini-3-pro-image", **call)
    assert "Vertex AI" in str(caught.value) and "GOOGLE_GENAI_USE_VERTEXAI" in str(caught.value)
    _validate(_provider(api_key="k", vertexai=True), "gemini-3-pro-image", **call)  # fine on Vertex


def test_too_many_input_images_for_the_model() -> None:
    image = InputImage(data=make_image(8, 8), format="png", width=8, height=8, has_alpha=False)
    _validate(_provider(api_key="k"), "gemini-3-pro-image", Operation.EDIT, images=(image,) * 14)
    with pytest.raises(InvalidParameterError):
        _validate(_provider(api_key="k"), "gemini-2.5-flash-image", Operation.EDIT, images=(image,) * 4)


def test_gemini_refuses_masks() -> None:
    image = InputImage(data=make_image(8, 8), format="png", width=8, height=8, has_alpha=False)
    mask = InputImage(data=make_mask(8, 8), format="png", width=8, height=8, has_alpha=True)
    with pytest.raises(InvalidParameterError):
        _validate(_provider(api_key="k"), "gemini-3-pro-image", Operation.EDIT, images=(image,), mask=mask)


def test_imagen_checks() -> None:
    vertex = _provider(api_key="k", vertexai=True)
    with pytest.raises(InvalidParameterError, match="add_watermark"):
        _validate(vertex, "imagen-4.0-generate-001", seed=1, options={"add_watermark": True})
    with pytest.raises(InvalidParameterError):
        _validate(vertex, "imagen-4.0-generate-001", negative_prompt="fog")  # Imagen 4 takes none
    image = InputImage(data=make_image(8, 8), format="png", width=8, height=8, has_alpha=False)
    mask = InputImage(data=make_mask(8, 8), format="png", width=8, height=8, has_alpha=True)
    with pytest.raises(InvalidParameterError, match="mask_mode"):
        _validate(
            vertex,
            "imagen-3.0-capability-001",
            Operation.EDIT,
            images=(image,),
            mask=mask,
            options={"mask_mode": "background"},
        )
    with pytest.raises(InvalidParameterError, match="needs a mask"):
        _validate(
            vertex, "imagen-3.0-capability-001", Operation.EDIT, images=(image,), options={"mask_mode": "user_provided"}
        )
    _validate(
        vertex,
        "imagen-3.0-capability-001",
        Operation.EDIT,
        images=(image,),
        options={"mask_mode": "foreground", "edit_mode": "inpaint_removal"},
    )


# -- cost ----------------------------------------------------------------------------


def test_estimates_by_tier() -> None:
    provider = _provider(api_key="k", vertexai=True)
    for model, call, expected in [
        ("gemini-3-pro-image", {"resolution": "4K", "n": 2}, 0.48),
        ("gemini-3-pro-image", {}, 0.134),
        ("gemini-3.1-flash-image", {"resolution": "2K"}, 0.101),
        ("gemini-2.5-flash-image", {"n": 3}, 0.117),
        ("imagen-4.0-ultra-generate-001", {"n": 2}, 0.12),
    ]:
        request = _validate(provider, model, **call).request
        assert provider.estimate_cost(request, _spec(provider, model)) == pytest.approx(expected), model
    lite = _validate(provider, "gemini-3.1-flash-lite-image").request
    assert provider.estimate_cost(lite, _spec(provider, "gemini-3.1-flash-lite-image")) is None


async def test_one_client_per_event_loop_and_aclose_twice() -> None:
    provider = _provider(api_key="k")
    async with provider._session() as first:
        pass
    async with provider._session() as second:
        pass
    assert first is second
    await provider.aclose()
    await provider.aclose()
    assert provider._client is None
