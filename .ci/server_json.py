"""Writes (or checks) server.json, Atelier's entry for the MCP Registry.

Its environment variables come from docs/configuration.md (every `ATELIER_*` setting and every
vendor variable a provider reads), so a variable documented there is offered here too:

    python3 .ci/server_json.py --write     # after documenting a variable
    python3 .ci/server_json.py --check     # exit 1 when server.json is out of date
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = "https://github.com/atelier-mcp/atelier"
NAME = "io.github.atelier-mcp/atelier"
SECRET = re.compile(r"API_KEY|TOKEN|SECRET")

VENDOR = {
    "OPENAI_API_KEY": "OpenAI API key (openai provider; also the dalle provider's default key).",
    "OPENAI_BASE_URL": "An OpenAI-compatible gateway or server (openai and dalle providers).",
    "OPENAI_ORG_ID": "OpenAI organization id.",
    "OPENAI_PROJECT_ID": "OpenAI project id.",
    "AZURE_OPENAI_API_KEY": "Azure OpenAI key (openai and dalle providers).",
    "AZURE_OPENAI_ENDPOINT": "Azure OpenAI resource endpoint, e.g. https://my-resource.openai.azure.com.",
    "OPENAI_API_VERSION": "Azure OpenAI API version.",
    "GEMINI_API_KEY": "Gemini Developer API key (gemini provider).",
    "GOOGLE_API_KEY": "Google API key: the Gemini Developer API, or a Vertex AI express-mode key.",
    "GOOGLE_GENAI_USE_VERTEXAI": "true: use Vertex AI instead of the Gemini Developer API (needed for Imagen).",
    "GOOGLE_CLOUD_PROJECT": "Vertex AI project.",
    "GOOGLE_CLOUD_LOCATION": "Vertex AI location.",
    "MINIMAX_API_KEY": "MiniMax API key (minimax provider).",
    "MINIMAX_API_HOST": "MiniMax API host (overrides the region).",
    # storage.url: the bucket's credentials come from the standard AWS variables.
    "AWS_ACCESS_KEY_ID": "S3 access key id, when storage.url keeps images in a bucket.",
    "AWS_SECRET_ACCESS_KEY": "S3 secret access key, when storage.url keeps images in a bucket.",
    "AWS_SESSION_TOKEN": "S3 session token (temporary credentials).",
    "AWS_REGION": "S3 region, when storage.url keeps images in a bucket.",
}


def _plain(markdown: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    return re.sub(r"`([^`]*)`", r"\1", text).replace("**", "")


def documented() -> list[dict[str, object]]:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    found: list[tuple[str, str, str]] = []  # (name, description, format)
    for paragraph in re.findall(r"^(?:Variables:|Self-hosted servers).*?(?=\n\n)", doc, re.MULTILINE | re.DOTALL):
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", paragraph):
            found.append((name, VENDOR.get(name, "Read by a provider; see docs/configuration.md."), "string"))
    found += [(name, VENDOR[name], "string") for name in VENDOR if name.startswith("AWS_")]
    config = "Path of the TOML settings file (default: atelier.toml in the user config directory)."
    found.append(("ATELIER_CONFIG", config, "filepath"))
    for key, name, default, meaning in re.findall(
        r"^\| `([a-z_]+)` \| `(ATELIER_[A-Z_]+)` \| (.*?) \| (.*?) \|$", doc, re.MULTILINE
    ):
        kind = "boolean" if default in ("`true`", "`false`") else "string"
        if re.fullmatch(r"`[0-9.]+`( \(.*\))?", default):
            kind = "number"
        found.append((name, _plain(meaning), "filepath" if key.endswith("_dir") else kind))
    seen: set[str] = set()
    variables = []
    for name, description, kind in found:
        if name not in seen:
            seen.add(name)
            variables.append(
                {
                    "name": name,
                    "description": description,
                    "isRequired": False,
                    "isSecret": bool(SECRET.search(name)),
                    "format": kind,
                }
            )
    return variables


def server_json() -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    server = {
        "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
        "name": NAME,
        "title": "Atelier",
        "description": "Generate and edit images with any model: OpenAI GPT Image, Gemini/Imagen, MiniMax, plugins.",
        "repository": {"url": REPO, "source": "github"},
        "websiteUrl": REPO,
        "version": version,
        "packages": [
            {
                "registryType": "pypi",
                "registryBaseUrl": "https://pypi.org",
                "identifier": "atelier-mcp",
                "version": version,
                "runtimeHint": "uvx",
                "transport": {"type": "stdio"},
                "environmentVariables": documented(),
            }
        ],
    }
    return json.dumps(server, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    target = ROOT / "server.json"
    if argv == ["--write"]:
        target.write_text(server_json())
        return 0
    if argv == ["--check"]:
        if target.read_text() == server_json():
            return 0
        print("server.json is out of date: run `python3 .ci/server_json.py --write`", file=sys.stderr)
        return 1
    print("usage: python3 .ci/server_json.py --write | --check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
