"""Object storage for images: an S3-compatible bucket behind ``ATELIER_STORAGE__URL``.

The local output folder stays the default and stays the staging area: an image is written,
verified and published there first (atomically), then copied into the bucket. A bucket
object is created in one PUT with ``If-None-Match: *`` (``mode="create"``), so no partial
object is ever visible and an existing object is never replaced. The image's metadata
travels with it twice: the small, searchable part as object metadata (``x-amz-meta-*``),
the whole sidecar as a sibling ``<name>.json`` object.

Library: obstore (Rust ``object_store`` bindings). It speaks only the S3 API, is async
without a thread per call, streams reads, signs URLs locally, and is small to import;
aioboto3 would bring botocore's whole service model (tens of MB, seconds of import) for
the four operations used here. Credentials and region come from the standard ``AWS_*``
variables; the endpoint from ``ATELIER_STORAGE__ENDPOINT_URL``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from obstore.store import ClientConfig

from atelier_core.plugin.errors import ConfigurationError, NotFoundError, StorageError

__all__ = ["BucketObject", "BucketStore", "parse_bucket_url"]

# S3 caps user metadata at 2 KB in all; keep each value short.
_META_VALUE_LIMIT = 256
_STREAM_CHUNK = 256 * 1024


def parse_bucket_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → ``(bucket, prefix)``, refusing anything else clearly."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.username or parts.password:
        # Never echo a URL that carries credentials.
        shown = "(a URL with credentials)" if "@" in parts.netloc else repr(url)
        raise ConfigurationError(
            f"storage.url {shown} is not an S3 bucket URL; allowed: s3://bucket or "
            "s3://bucket/prefix (credentials come from AWS_* variables, never the URL). "
            "Fix: set ATELIER_STORAGE__URL=s3://your-bucket/images."
        )
    return parts.netloc, parts.path.strip("/")


@dataclass(frozen=True, slots=True)
class BucketObject:
    """One stored object: where it is, how big, and its metadata."""

    key: str
    size: int
    content_type: str | None
    metadata: dict[str, str]


class BucketStore:
    """Images in an S3-compatible bucket; keys are paths relative to the output root."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        presign_ttl_s: float = 0.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        from obstore.store import S3Store  # lazy: only team deployments pay the import

        self.bucket, self.prefix = parse_bucket_url(url)
        self.url = url.rstrip("/")
        self.presign_ttl_s = presign_ttl_s
        options: dict[str, Any] = dict(client_options or {})
        config: dict[str, Any] = {}
        if endpoint_url:
            config["endpoint"] = endpoint_url
            if endpoint_url.startswith("http://"):
                options.setdefault("allow_http", True)
            # Path-style addressing: S3-compatible servers rarely have wildcard DNS.
            config["virtual_hosted_style_request"] = False
        self._store = S3Store(
            self.bucket,
            prefix=self.prefix or None,
            client_options=cast("ClientConfig", options) if options else None,
            **config,
        )

    def location(self, key: str) -> str:
        """The object's ``s3://`` address (no credentials, nothing signed)."""
        return f"{self.url}/{key}"

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Create ``key`` with ``data`` in one request; an existing object is never replaced."""
        import obstore

        attributes: dict[str, str] = {"Content-Type": content_type}
        for name, value in (metadata or {}).items():
            if value is None:
                continue
            text = str(value).encode("ascii", "backslashreplace").decode("ascii")
            attributes[f"atelier-{name}"] = text[:_META_VALUE_LIMIT]
        try:
            await obstore.put_async(self._store, key, data, attributes=attributes, mode="create")
        except Exception as exc:  # obstore raises its own hierarchy; name it plainly
            if type(exc).__name__ == "AlreadyExistsError":
                raise StorageError(
                    f"object {self.location(key)} already exists; it was not replaced",
                    fix="choose another filename; stored images are never overwritten",
                ) from None
            raise StorageError(
                f"could not store {self.location(key)}: {type(exc).__name__}",
                fix="check the bucket, its endpoint and the AWS_* credentials (atelier-mcp doctor)",
            ) from None

    async def head(self, key: str) -> BucketObject:
        """Size, type and metadata of ``key`` without reading its bytes."""
        import obstore

        try:
            result = await obstore.get_async(self._store, key, options={"head": True})
        except FileNotFoundError:
            raise NotFoundError(f"no stored image {key!r}") from None
        return self._describe(key, result)

    async def stream(self, key: str) -> tuple[BucketObject, AsyncIterator[bytes]]:
        """The object's description and an iterator over its bytes (never all in memory)."""
        import obstore

        try:
            result = await obstore.get_async(self._store, key)
        except FileNotFoundError:
            raise NotFoundError(f"no stored image {key!r}") from None

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=_STREAM_CHUNK):
                yield bytes(chunk)

        return self._describe(key, result), chunks()

    async def read(self, key: str, *, limit: int) -> bytes:
        """The whole object, refused above ``limit`` bytes before any byte is read."""
        info, chunks = await self.stream(key)
        if info.size > limit:
            raise StorageError(
                f"stored image {key!r} is {info.size} bytes, above the {limit}-byte limit",
                fix="raise storage.max_resource_bytes or fetch it through a pre-signed URL",
            )
        return b"".join([chunk async for chunk in chunks])

    async def presign(self, key: str) -> str | None:
        """A time-limited GET URL for ``key``, or None when pre-signing is off."""
        if self.presign_ttl_s <= 0:
            return None
        import obstore

        ttl = dt.timedelta(seconds=self.presign_ttl_s)
        return str(await obstore.sign_async(self._store, "GET", key, ttl))

    async def delete(self, key: str) -> None:
        import obstore

        try:
            await obstore.delete_async(self._store, key)
        except FileNotFoundError:
            return

    async def keys(self, prefix: str | None = None) -> list[str]:
        """Every key under ``prefix`` (relative to the store's own prefix)."""
        import obstore

        found: list[str] = []
        async for batch in obstore.list(self._store, prefix=prefix):
            found.extend(str(item["path"]) for item in batch)
        return found

    @staticmethod
    def _describe(key: str, result: Any) -> BucketObject:
        attributes = dict(result.attributes or {})
        content_type = attributes.pop("Content-Type", None)
        metadata = {
            name.removeprefix("atelier-"): str(value)
            for name, value in attributes.items()
            if isinstance(name, str) and name.startswith("atelier-")
        }
        return BucketObject(
            key=key,
            size=int(result.meta["size"]),
            content_type=str(content_type) if content_type else None,
            metadata=metadata,
        )
