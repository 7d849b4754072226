"""Mirror: every published image (and its sidecar) also goes to the bucket, when one is set.

One small step after the store stage's local, atomic publish (``storage.url``): the image
is put under the key it has below the output folder (``principals/<name>-<hash>/…`` for an
HTTP principal), in one create-only PUT with its metadata on the object, then the sidecar
as ``<key>.json``. The result then carries the object's ``s3://`` address and, when
``storage.presign_ttl_s`` is above 0, a pre-signed GET URL. Another replica serves
``resources/read`` of the image from the bucket when the file is not on its own disk.

A failed upload does not lose the image (it was paid for and is saved locally): the result
says so in a note, and the error is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import structlog

from atelier_core.identity import current_principal
from atelier_core.plugin.errors import AtelierError

if TYPE_CHECKING:
    from atelier_core.media.objects import BucketStore
    from atelier_core.media.storage import OutputStore, SavedImage

__all__ = ["Mirrored", "mirror"]

log = structlog.get_logger("atelier.storage")

# Object metadata is capped (2 KB in all on S3): the searchable part only; the whole
# record is the sidecar object.
_OBJECT_FIELDS = ("model", "provider", "operation", "prompt", "seed", "request_id", "created_at")


@dataclass(slots=True, frozen=True)
class Mirrored:
    object_uri: str | None = None
    url: str | None = None
    note: str | None = None


async def mirror(bucket: BucketStore, store: OutputStore, saved: SavedImage, metadata: dict[str, Any]) -> Mirrored:
    """Put ``saved`` (and its sidecar) into ``bucket``; where it went, or a note why not."""
    key = store.key_of(saved.relative)
    meta = {name: metadata.get(name) for name in _OBJECT_FIELDS}
    meta.update(sha256=saved.sha256, width=saved.width, height=saved.height, principal=current_principal())
    try:
        data = await anyio.to_thread.run_sync(saved.path.read_bytes)
        await bucket.put(key, data, content_type=saved.mime_type, metadata=meta)
        if saved.sidecar is not None:
            sidecar = await anyio.to_thread.run_sync(saved.sidecar.read_bytes)
            await bucket.put(f"{key}.json", sidecar, content_type="application/json", metadata={"sha256": saved.sha256})
        url = await bucket.presign(key)
    except (AtelierError, OSError) as exc:
        log.error("an image could not be copied to the bucket", key=key, error=str(exc))
        return Mirrored(
            note=f"{saved.relative} is saved on this server but not in the bucket ({bucket.location(key)}): {exc}"
        )
    return Mirrored(object_uri=bucket.location(key), url=url)
