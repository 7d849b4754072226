"""What a call returns: saved images, failures, applied values and cost (JSON round-trippable)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from atelier_core.media import images as imaging
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ItemFailure, Usage

# -- results -----------------------------------------------------------------------


class ImageRecord(BaseModel):
    """One saved image."""

    path: str
    uri: str = Field(description="file:// URI of the full image")
    resource_uri: str = Field(description="atelier:// URI readable with resources/read")
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    seed: int | None = None
    revised_prompt: str | None = None
    sidecar: str | None = None
    object_uri: str | None = Field(None, description="s3:// address of the image in the bucket (storage.url)")
    url: str | None = Field(None, description="pre-signed GET URL (storage.presign_ttl_s)")


class CostInfo(BaseModel):
    """What the call was expected to cost and what it cost (USD)."""

    estimate_usd: float | None = None
    cost_usd: float | None = None
    basis: str = "unpriced"
    pricing_as_of: str | None = None
    #: the part of ``estimate_usd`` allowed for a charge beyond the images (and what it is)
    extra_estimate_usd: float | None = None
    extra_note: str | None = Field(None, exclude=True)


class CallOutcome(BaseModel):
    """The result of one call, JSON round-trippable (jobs persist and re-render it).

    ``failures`` lists requested images that did not come back (partial success); the
    images that did are saved and listed in ``images`` — the caller should not pay again
    for them.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    provider: str
    operation: Operation
    images: list[ImageRecord] = Field(default_factory=list)
    failures: list[ItemFailure] = Field(default_factory=list)
    requested: dict[str, Any] = Field(default_factory=dict)
    applied: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    cost: CostInfo = Field(default_factory=CostInfo)
    texts: list[str] = Field(default_factory=list)
    request_id: str | None = None
    elapsed_s: float = 0.0
    dry_run: bool = False
    job: dict[str, Any] | None = Field(
        None, description="set when the call continues as a background job: its id and state"
    )
    continuation: dict[str, Any] = Field(
        default_factory=dict, description="options that continue this answer on the same model (edit sessions)"
    )


class PreviewCache:
    """The default previews of recently saved images, until the MCP layer renders them.

    Bounded (oldest dropped first); :meth:`take` removes the entry, so a preview is held
    only between saving an image and answering the call (or a job's first collection).
    """

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._items: OrderedDict[tuple[str, str], imaging.Preview] = OrderedDict()

    def put(self, path: str, sha256: str, preview: imaging.Preview) -> None:
        self._items[(path, sha256)] = preview
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def take(self, path: str, sha256: str) -> imaging.Preview | None:
        return self._items.pop((path, sha256), None)
