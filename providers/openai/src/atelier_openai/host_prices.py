"""Token prices of the Responses API host models (the model that calls ``image_generation``).

On the Responses route OpenAI bills the host model's input and output tokens on top of the
image. These are OpenAI's list prices in USD per 1M tokens, dated; a model missing here (or
a price that changed) is set with the setting ``responses_model_prices``
(``{"gpt-4.1-mini": {"input_per_mtok": 0.4, "output_per_mtok": 1.6}}``), which wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from atelier_core import ImageRequest

from .settings import HostModelPrice

__all__ = ["AS_OF", "HOST_PRICES", "HostPrice", "host_cost", "host_estimate", "price_of"]

AS_OF = "2025-08-07"
SOURCE = "https://openai.com/api/pricing/"


@dataclass(frozen=True, slots=True)
class HostPrice:
    input_per_mtok: float
    output_per_mtok: float
    as_of: str = AS_OF


HOST_PRICES: dict[str, HostPrice] = {
    "gpt-4.1-mini": HostPrice(0.40, 1.60),
    "gpt-4.1-nano": HostPrice(0.10, 0.40),
    "gpt-4.1": HostPrice(2.00, 8.00),
    "gpt-4o-mini": HostPrice(0.15, 0.60),
    "gpt-4o": HostPrice(2.50, 10.00),
    "o3": HostPrice(2.00, 8.00),
    "gpt-5": HostPrice(1.25, 10.00),
    "gpt-5-mini": HostPrice(0.25, 2.00),
    "gpt-5-nano": HostPrice(0.05, 0.40),
}

# The quote's allowance (conservative: the answer's usage settles the real figure).
#: tool definition, instructions and message framing the host model reads
FIXED_INPUT_TOKENS = 1_000
#: an input image as the host model sees it (high detail, a large image)
IMAGE_INPUT_TOKENS = 1_600
#: a chained turn (previous_response_id) re-reads the earlier conversation
CHAINED_INPUT_TOKENS = 3_000
#: the host model's own output: the tool call and a short reply
OUTPUT_TOKENS = 1_000


def price_of(model: str, overrides: dict[str, HostModelPrice]) -> HostPrice | None:
    """The host model's price: the setting's override, else the table (``None``: unknown)."""
    override = overrides.get(model)
    if override is not None:
        return HostPrice(override.input_per_mtok, override.output_per_mtok, as_of="configured")
    return HOST_PRICES.get(model)


def host_cost(price: HostPrice, input_tokens: int, output_tokens: int) -> float:
    """USD for the host model's tokens."""
    return round((input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1_000_000, 6)


def host_estimate(request: ImageRequest) -> tuple[int, int]:
    """A conservative (input, output) token allowance for one Responses-route call."""
    prompt_tokens = math.ceil(len((request.prompt or "").encode()) / 3)  # ~4 chars a token; kept high
    images = len(request.images) + (1 if request.mask is not None else 0)
    chained = CHAINED_INPUT_TOKENS if request.options.get("previous_response_id") else 0
    return FIXED_INPUT_TOKENS + prompt_tokens + images * IMAGE_INPUT_TOKENS + chained, OUTPUT_TOKENS
