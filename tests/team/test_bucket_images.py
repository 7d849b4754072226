"""Images in the bucket, per principal: two replicas with their own disks and one bucket
(moto's S3 server on 127.0.0.1). What one replica publishes is in the bucket with its
metadata and sidecar; the other serves it to its owner by resources/read; no other
principal can read it, by URI or by path."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx2
import pytest
from replica_kit import RpcError, call_tool, replicas, rpc
from s3_kit import CREDENTIALS

from atelier_core.media.objects import BucketStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef00"}


async def test_published_images_go_to_the_bucket_and_stay_their_owners(
    tmp_path: Path, s3_server, s3_bucket: str
) -> None:
    shared = {
        "ATELIER_HTTP__TOKENS": json.dumps(TOKENS),
        "ATELIER_HTTP__STATELESS": "true",
        "ATELIER_STORAGE__URL": f"s3://{s3_bucket}/team",
        "ATELIER_STORAGE__ENDPOINT_URL": s3_server.endpoint,
        "ATELIER_STORAGE__PRESIGN_TTL_S": "600",
        "ATELIER_DATA_DIR": str(tmp_path / "data"),
        **CREDENTIALS,
    }
    envs = {name: {**shared, "ATELIER_STORAGE__OUTPUT_DIR": str(tmp_path / f"images-{name}")} for name in "ab"}
    with replicas(tmp_path, envs) as running:
        a, b = running["a"].url, running["b"].url
        async with httpx2.AsyncClient(timeout=60) as http:
            made = await call_tool(
                http,
                a,
                "generate_image",
                {"prompt": "a red kite", "model": "placeholder", "size": "256x256", "return_image": "none"},
                token=TOKENS["alice"],
            )
            assert not made.get("isError"), made
            (image,) = made["structuredContent"]["images"]
            local = Path(image["path"])
            assert local.is_relative_to(tmp_path / "images-a" / "principals")
            assert image["object_uri"].startswith(f"s3://{s3_bucket}/team/principals/alice-")
            assert image["object_uri"].endswith(local.name)

            # The pre-signed URL fetches the very bytes, without credentials.
            fetched = await http.get(image["url"])
            assert fetched.status_code == 200
            assert hashlib.sha256(fetched.content).hexdigest() == image["sha256"]

            # Replica b never saw the file; it reads it from the bucket for alice.
            read = await rpc(http, b, "resources/read", {"uri": image["resource_uri"]}, token=TOKENS["alice"])
            (contents,) = read["contents"]
            assert hashlib.sha256(base64.b64decode(contents["blob"])).hexdigest() == image["sha256"]
            assert contents["mimeType"] == "image/png"

            # ... and takes it as an input image.
            edited = await call_tool(
                http,
                b,
                "edit_image",
                {
                    "images": [image["resource_uri"]],
                    "prompt": "add a tail",
                    "model": "placeholder",
                    "return_image": "none",
                },
                token=TOKENS["alice"],
            )
            assert not edited.get("isError"), edited

            # Bob: the same URI is "not found" on both replicas, and so is the path.
            for url in (a, b):
                with pytest.raises(RpcError) as refused:
                    await rpc(http, url, "resources/read", {"uri": image["resource_uri"]}, token=TOKENS["bob"])
                assert "no such image" in refused.value.error["message"]
            for reference, url in ((str(local), a), (image["resource_uri"], b)):
                stolen = await call_tool(
                    http,
                    url,
                    "edit_image",
                    {"images": [reference], "prompt": "x", "model": "placeholder"},
                    token=TOKENS["bob"],
                )
                assert stolen.get("isError")
                assert "a red kite" not in json.dumps(stolen)

    # The object carries its metadata; the sidecar is beside it.
    store = BucketStore(f"s3://{s3_bucket}/team", endpoint_url=s3_server.endpoint)
    key = image["object_uri"].removeprefix(f"s3://{s3_bucket}/team/")
    head = await store.head(key)
    assert head.metadata["sha256"] == image["sha256"]
    assert head.metadata["model"].startswith("placeholder/") and head.metadata["width"] == "256"
    assert head.metadata["prompt"] == "a red kite" and head.metadata["principal"] == "alice"
    sidecar = json.loads(await store.read(f"{key}.json", limit=1_000_000))
    assert sidecar["sha256"] == image["sha256"] and sidecar["prompt"] == "a red kite"
