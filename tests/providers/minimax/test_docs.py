"""docs/providers/minimax.md stays true: its TOML loads, its tables match the specs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import atelier_minimax
from atelier_core.engine.cost import apply_price_override
from atelier_core.engine.registry import build_registry
from atelier_core.settings import Settings
from atelier_minimax import IMAGE_01, IMAGE_01_LIVE
from atelier_minimax.models import RATIO_SIZES, STYLE_TYPES
from atelier_minimax.translate import STATUS_KINDS

PAGE = Path(__file__).resolve().parents[3] / "docs" / "providers" / "minimax.md"


def test_toml_examples_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 2
    for index, block in enumerate(blocks):
        config = tmp_path / f"atelier-{index}.toml"
        config.write_text(block)
        monkeypatch.setenv("ATELIER_CONFIG", str(config))
        settings = Settings()
        registry = build_registry(settings, plugins=[("minimax", atelier_minimax)], entry_points=False)
        (record,) = registry.plugins
        assert record.status == "loaded", record.error
        for entry in registry.entries(provider="minimax"):
            priced = apply_price_override(entry.spec, entry.canonical_id, settings.cost)
            assert priced.pricing is not None and priced.pricing.per_image == 0.0035


def test_tables_match_the_specs() -> None:
    text = PAGE.read_text()
    for ratio, size in RATIO_SIZES.items():
        assert size in text and ratio in text
    for english, chinese in STYLE_TYPES.items():
        assert f"`{english}` or `{chinese}`" in text
    for code in STATUS_KINDS:
        assert f"| {code} |" in text, f"status {code} missing from the error table"
    assert IMAGE_01.pricing is not None and IMAGE_01_LIVE.pricing is not None
    assert f"${IMAGE_01.pricing.per_image}" in text and IMAGE_01.pricing.as_of in text
    assert "21:9" not in IMAGE_01_LIVE.sizes.aspect_ratios
