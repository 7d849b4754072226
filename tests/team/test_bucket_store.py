"""The S3 bucket store against a real S3-compatible server on 127.0.0.1 (moto)."""

from __future__ import annotations

import pytest

from atelier_core.media.objects import BucketStore, parse_bucket_url
from atelier_core.plugin.errors import ConfigurationError, NotFoundError, StorageError


def _store(s3_server, bucket: str, **kwargs) -> BucketStore:
    return BucketStore(f"s3://{bucket}/images", endpoint_url=s3_server.endpoint, **kwargs)


@pytest.mark.parametrize(
    "url",
    ["https://bucket/x", "s3://", "s3://user:secret@bucket/x", "/tmp/images"],
)
def test_only_plain_s3_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_bucket_url(url)
    assert "s3://bucket/prefix" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_parse_keeps_bucket_and_prefix() -> None:
    assert parse_bucket_url("s3://team-images/atelier/prod/") == ("team-images", "atelier/prod")
    assert parse_bucket_url("s3://team-images") == ("team-images", "")


async def test_put_then_stream_back_with_metadata(s3_server, s3_bucket) -> None:
    store = _store(s3_server, s3_bucket)
    data = bytes(range(256)) * 4096  # 1 MiB, several stream chunks
    await store.put(
        "2026/fox.png",
        data,
        content_type="image/png",
        metadata={"model": "openai/gpt-image-2", "sha256": "ab" * 32, "prompt": "a fox é"},
    )
    info, chunks = await store.stream("2026/fox.png")
    received = [chunk async for chunk in chunks]
    assert b"".join(received) == data
    assert len(received) >= 2, "a large object is streamed, not read in one piece"
    assert info.size == len(data)
    assert info.content_type == "image/png"
    assert info.metadata["model"] == "openai/gpt-image-2"
    assert info.metadata["sha256"] == "ab" * 32
    assert (await store.head("2026/fox.png")).metadata == info.metadata
    assert store.location("2026/fox.png") == f"s3://{s3_bucket}/images/2026/fox.png"


async def test_an_existing_object_is_never_replaced(s3_server, s3_bucket) -> None:
    store = _store(s3_server, s3_bucket)
    await store.put("a.png", b"first", content_type="image/png")
    with pytest.raises(StorageError) as caught:
        await store.put("a.png", b"second", content_type="image/png")
    assert "already exists" in str(caught.value)
    assert await store.read("a.png", limit=100) == b"first"


async def test_missing_object_is_not_found(s3_server, s3_bucket) -> None:
    store = _store(s3_server, s3_bucket)
    with pytest.raises(NotFoundError):
        await store.head("nope.png")
    with pytest.raises(NotFoundError):
        await store.stream("nope.png")


async def test_read_refuses_above_the_limit_before_reading(s3_server, s3_bucket) -> None:
    store = _store(s3_server, s3_bucket)
    await store.put("big.png", b"x" * 5000, content_type="image/png")
    with pytest.raises(StorageError) as caught:
        await store.read("big.png", limit=1000)
    assert "5000" in str(caught.value) and "1000" in str(caught.value)


async def test_presigned_urls_fetch_the_object_and_are_off_by_default(s3_server, s3_bucket) -> None:
    import urllib.request

    plain = _store(s3_server, s3_bucket)
    await plain.put("p.png", b"signed bytes", content_type="image/png")
    assert await plain.presign("p.png") is None
    signed = _store(s3_server, s3_bucket, presign_ttl_s=300)
    url = await signed.presign("p.png")
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    assert "atelier-test-secret" not in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"signed bytes"


async def test_keys_and_delete(s3_server, s3_bucket) -> None:
    store = _store(s3_server, s3_bucket)
    for name in ("a/1.png", "a/2.png", "b/3.png"):
        await store.put(name, b"x", content_type="image/png")
    assert sorted(await store.keys()) == ["a/1.png", "a/2.png", "b/3.png"]
    assert sorted(await store.keys("a")) == ["a/1.png", "a/2.png"]
    await store.delete("a/1.png")
    await store.delete("a/1.png")  # deleting twice is fine
    assert sorted(await store.keys()) == ["a/2.png", "b/3.png"]
