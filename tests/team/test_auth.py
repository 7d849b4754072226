"""Bearer-token verifiers: a static principal map and OAuth JWTs checked against a JWKS
served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from atelier_core.mcp.auth import JwksTokens, StaticTokens
from atelier_core.plugin.errors import ConfigurationError

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef00"


async def test_static_tokens_name_their_principal() -> None:
    verifier = StaticTokens({"alice": ALICE, "bob": BOB})
    assert (await verifier.verify_token(ALICE)).subject == "alice"
    assert (await verifier.verify_token(BOB)).subject == "bob"
    assert await verifier.verify_token("nope") is None
    assert await verifier.verify_token(ALICE[:-1]) is None
    assert await verifier.verify_token("") is None
    # The verified token object never carries the secret on.
    assert (await verifier.verify_token(ALICE)).token == ""


@pytest.mark.parametrize(
    ("tokens", "words"),
    [
        ({"alice": "short"}, "shorter than 16"),
        ({"alice": ALICE, "bob": ALICE}, "share one token"),
        ({"": ALICE}, "invalid principal"),
    ],
)
def test_static_tokens_refuse_weak_configuration(tokens, words) -> None:
    with pytest.raises(ConfigurationError) as caught:
        StaticTokens(tokens)
    assert words in str(caught.value)
    assert ALICE not in str(caught.value)


class _Jwks:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.document = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
        self.hits = 0

    def token(self, **claims) -> str:
        base = {"iss": "https://issuer.test", "aud": "atelier", "sub": "carol", "exp": int(time.time()) + 300}
        base.update(claims)
        return jwt.encode(
            {k: v for k, v in base.items() if v is not None}, self.key, algorithm="RS256", headers={"kid": "k1"}
        )


@pytest.fixture
def jwks() -> Iterator[tuple[_Jwks, str]]:
    keys = _Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keys.hits += 1
            body = json.dumps(keys.document).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield keys, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


async def test_jwt_from_the_issuer_names_its_subject(jwks) -> None:
    keys, url = jwks
    verifier = JwksTokens(issuer="https://issuer.test", jwks_url=url, audience="atelier")
    access = await verifier.verify_token(keys.token(scope="images:write"))
    assert access is not None
    assert access.subject == "carol"
    assert access.scopes == ["images:write"]
    await verifier.verify_token(keys.token(sub="dave"))
    assert keys.hits == 1, "the JWKS is cached"


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.test"},
        {"aud": "someone-else"},
        {"exp": int(time.time()) - 3600},
        {"sub": None},
    ],
)
async def test_wrong_tokens_are_refused(jwks, claims) -> None:
    keys, url = jwks
    verifier = JwksTokens(issuer="https://issuer.test", jwks_url=url, audience="atelier")
    assert await verifier.verify_token(keys.token(**claims)) is None


async def test_a_token_signed_by_another_key_is_refused(jwks) -> None:
    _keys, url = jwks
    verifier = JwksTokens(issuer="https://issuer.test", jwks_url=url, audience="atelier")
    forger = _Jwks()
    assert await verifier.verify_token(forger.token()) is None
    assert await verifier.verify_token("not.a.jwt") is None
    # An unsigned token ("alg": "none") is never accepted.
    unsigned = jwt.encode(
        {"iss": "https://issuer.test", "aud": "atelier", "sub": "x", "exp": int(time.time()) + 60},
        key=None,
        algorithm="none",
        headers={"kid": "k1"},
    )
    assert await verifier.verify_token(unsigned) is None


def test_jwks_url_must_be_https_off_loopback() -> None:
    with pytest.raises(ConfigurationError):
        JwksTokens(issuer="i", jwks_url="http://issuer.example/jwks", audience=None)
    with pytest.raises(ConfigurationError) as caught:
        JwksTokens(issuer="i", jwks_url="https://u:pw@issuer.example/jwks", audience=None)
    assert "pw" not in str(caught.value)


@pytest.mark.slow
async def test_a_replica_with_an_oauth_issuer(jwks, tmp_path) -> None:
    """The OAuth variables of docs/deploying.md on a served replica: the principal is `sub`,
    and each subject sees only its own jobs."""
    import httpx2
    from replica_kit import call_tool, replicas

    keys, url = jwks
    env = {
        "ATELIER_HTTP__OAUTH_ISSUER": "https://issuer.test",
        "ATELIER_HTTP__OAUTH_JWKS_URL": url,
        "ATELIER_HTTP__OAUTH_AUDIENCE": "atelier",
        "ATELIER_HTTP__STATELESS": "true",
    }
    with replicas(tmp_path, {"a": env}) as running:
        mcp = running["a"].url
        async with httpx2.AsyncClient(timeout=60) as http:
            refused = await http.post(
                mcp,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"authorization": f"Bearer {keys.token(aud='other')}"},
            )
            assert refused.status_code == 401
            made = await call_tool(
                http,
                mcp,
                "generate_image",
                {
                    "prompt": "carol's kite",
                    "model": "placeholder",
                    "size": "256x256",
                    "as_job": True,
                    "return_image": "none",
                },
                token=keys.token(sub="carol"),
            )
            assert not made.get("isError"), made
            job_id = made["structuredContent"]["job"]["job_id"]
            mine = await call_tool(
                http, mcp, "get_jobs", {"job_ids": [job_id], "wait_s": 30}, token=keys.token(sub="carol")
            )
            assert mine["structuredContent"]["jobs"][0]["state"] == "done"
            (image,) = mine["structuredContent"]["jobs"][0]["result"]["images"]
            assert "/principals/carol-" in image["path"]
            theirs = await call_tool(http, mcp, "get_jobs", {"job_ids": [job_id]}, token=keys.token(sub="dave"))
            assert theirs.get("isError") and "carol's kite" not in json.dumps(theirs)
