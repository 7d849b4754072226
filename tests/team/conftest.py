from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from s3_kit import CREDENTIALS, S3Server, running_s3_server

_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the AWS_* variables point at the test server's credentials."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = f"atelier-test-{next(_buckets)}"
    s3_server.create_bucket(name)
    return name
