"""Requests and results that cross the boundary between the core and a provider.

``ImageCall`` is what a caller asked for, as given. The core validates it against the
model's :class:`~atelier_core.plugin.spec.ModelSpec` and hands the provider an
:class:`ImageRequest`: normalised, complete, with input images already read and checked.
The provider answers with a :class:`ProviderResult` holding raw image bytes; the core
verifies, stores and reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from atelier_core.plugin.spec import Operation

__all__ = [
    "ImageCall",
    "ImageRequest",
    "InputImage",
    "ItemFailure",
    "ProviderImage",
    "ProviderResult",
    "Usage",
]


class ImageCall(BaseModel):
    """A generate/edit/variation request exactly as the caller gave it."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | None = None
    n: int = 1
    size: str | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    quality: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    style: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    images: list[str] = Field(default_factory=list, description="input image references")
    mask: str | None = None

    def requested(self) -> dict[str, Any]:
        """The parameters the caller set (for 'requested vs applied' reports)."""
        data = self.model_dump(exclude_defaults=True, exclude={"images", "mask", "prompt"})
        if self.images:
            data["images"] = len(self.images)
        if self.mask:
            data["mask"] = True
        return data


@dataclass(frozen=True, slots=True)
class InputImage:
    """An input image that the core has read, decoded once and checked.

    ``data`` are the original bytes (what is uploaded); ``format`` is the sniffed format
    (``png``, ``jpeg``, ``webp``, ``gif``), never the file name's extension.
    """

    data: bytes
    format: str
    width: int
    height: int
    has_alpha: bool
    source: str = field(default="image", compare=False)

    @property
    def mime_type(self) -> str:
        return f"image/{self.format}"

    @property
    def filename(self) -> str:
        ext = "jpg" if self.format == "jpeg" else self.format
        return f"{self.source.rsplit('/', 1)[-1].rsplit('.', 1)[0] or 'image'}.{ext}"


#: The largest image any shipped model returns (4096 x 4096): the pixel bound for ``auto``.
LARGEST_OUTPUT_PIXELS = 4096 * 4096
#: The most an image of each format takes per pixel: 8-bit RGBA is 4 bytes raw, and
#: PNG/WebP add filter bytes and block overhead on incompressible pixels; JPEG stores
#: three channels; GIF one palette index (LZW can grow noise a little).
BYTES_PER_PIXEL = {"png": 4.25, "webp": 4.25, "jpeg": 3.5, "jpg": 3.5, "gif": 1.5}
#: Room for metadata an image may carry (C2PA manifests, ICC profiles, EXIF).
ANSWER_METADATA_BYTES = 2 * 1024 * 1024


class ImageRequest(BaseModel):
    """A validated, normalised request for one provider call.

    Sizes are explicit: ``width``/``height`` when a pixel size was chosen (``None`` means
    the model's ``auto``), ``aspect_ratio``/``resolution`` for ratio-based models.
    ``options`` holds the model-specific extras, already validated by the model's options
    model and dumped without unset fields.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    operation: Operation
    model: str
    prompt: str | None = None
    n: int = 1
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    quality: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    style: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    images: tuple[InputImage, ...] = ()
    mask: InputImage | None = None

    @property
    def size(self) -> str | None:
        """``"WxH"`` when a pixel size is set, else ``None``."""
        if self.width and self.height:
            return f"{self.width}x{self.height}"
        return None

    def max_image_bytes(self) -> int:
        """The most bytes one returned image can plausibly take: the requested pixels
        (twice over, for a vendor that rounds a size up; the largest output any model
        makes when the size is ``auto``) times the most an image of the requested format
        takes a pixel, plus room for metadata. The core refuses a larger image before
        decoding it; a provider may check base64 text against it before decoding."""
        if self.width and self.height:
            pixels = 2 * self.width * self.height
        elif self.resolution and self.resolution[:-1].isdigit() and self.resolution[-1:].upper() == "K":
            edge = int(self.resolution[:-1]) * 1024
            pixels = 2 * edge * edge
        else:
            pixels = LARGEST_OUTPUT_PIXELS
        per_pixel = BYTES_PER_PIXEL.get((self.output_format or "png").lower(), max(BYTES_PER_PIXEL.values()))
        return int(pixels * per_pixel) + ANSWER_METADATA_BYTES


class Usage(BaseModel):
    """What the provider reports it consumed. Every field is optional."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_text_tokens: int | None = None
    input_image_tokens: int | None = None
    images: int | None = None

    def merged(self, other: Usage | None) -> Usage:
        """Sum of two usages (for fanned-out calls)."""
        if other is None:
            return self
        values: dict[str, int | None] = {}
        for name in type(self).model_fields:
            a, b = getattr(self, name), getattr(other, name)
            values[name] = None if a is None and b is None else (a or 0) + (b or 0)
        return Usage(**values)


class ProviderImage(BaseModel):
    """One image as the provider returned it: raw encoded bytes plus what it said about it."""

    model_config = ConfigDict(frozen=True)

    data: bytes
    mime_type: str | None = None
    revised_prompt: str | None = None
    seed: int | None = None


class ItemFailure(BaseModel):
    """A requested image that did not come back, with the reason."""

    index: int
    code: str
    message: str


class ProviderResult(BaseModel):
    """What a provider call produced.

    ``images`` may be fewer than requested: each missing one should be listed in
    ``failures`` with a reason (the core adds generic failures for any unaccounted).
    ``applied`` records parameters the provider chose or changed (e.g. the real size
    for ``auto``). ``texts`` are text parts the model returned beside the images;
    ``notes`` are what the provider itself wants the caller to know (added to the result's
    notes).
    """

    images: list[ProviderImage] = Field(default_factory=list)
    failures: list[ItemFailure] = Field(default_factory=list)
    usage: Usage | None = None
    request_id: str | None = None
    texts: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    applied: dict[str, Any] = Field(default_factory=dict)
    cost_usd: float | None = Field(None, description="provider-computed cost, if it knows better")
    extra_cost_usd: float | None = Field(
        None,
        ge=0,
        description="a charge on top of the images' cost (e.g. the tokens of a model that called the "
        "image tool): the core adds it to the settled cost, the sidecars and the ledger",
    )
    continuation: dict[str, Any] = Field(
        default_factory=dict,
        description="options that continue this answer's conversation on the same model (a vendor's "
        "turn chaining, e.g. a response id); edit sessions send them with the next turn",
    )
