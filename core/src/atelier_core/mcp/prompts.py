"""MCP prompts for common image tasks (the ``prompts`` capability, shown by clients as
slash commands or templates).

Each prompt turns a few arguments into one user message that tells the model which tool
to call and with what: a worded image prompt plus the parameters that suit the task
(transparent background for a logo, a consistent seed for an icon set, a mask hint for a
retouch). Prompts only write text; nothing is generated or billed until the model calls
a tool.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

__all__ = ["PROMPT_NAMES", "add_prompts"]

PROMPT_NAMES = ("logo", "product_shot", "icon_set", "illustration_style", "photo_retouch")


def _model_hint(model: str | None) -> str:
    return f'model="{model}"' if model else "a model from list_available_models that can do it (check its price first)"


def logo(
    brand: Annotated[str, Field(description="The name or mark to show.")],
    style: Annotated[str, Field(description="e.g. minimal, geometric, hand-drawn, vintage.")] = "minimal, flat",
    colors: Annotated[str | None, Field(description="Brand colours, e.g. 'navy and gold'.")] = None,
    model: Annotated[str | None, Field(description="Model id; default: ask list_available_models.")] = None,
) -> str:
    palette = f" in {colors}" if colors else ""
    return (
        f'Design a logo for "{brand}": a {style} mark{palette}, centred, no mock-up, no extra text '
        "beyond the name, crisp edges that read at small sizes.\n"
        f"Call generate_image with that prompt, {_model_hint(model)}, n=3 for options, "
        'background="transparent" and output_format="png" if the model allows them (otherwise a '
        "plain white background), and a square size. Show me the three and ask which to refine; "
        "refine the chosen one with edit_session."
    )


def product_shot(
    product: Annotated[str, Field(description="What the product is.")],
    setting: Annotated[
        str, Field(description="Backdrop, e.g. 'white studio', 'marble counter'.")
    ] = "seamless white studio",
    image: Annotated[
        str | None, Field(description="A photo of the real product (path, URL or atelier:// URI).")
    ] = None,
    model: Annotated[str | None, Field(description="Model id; default: ask list_available_models.")] = None,
) -> str:
    scene = (
        f"A professional product photograph of {product} on a {setting}: soft key light, gentle "
        "shadow, true colours, sharp focus on the product, generous space around it."
    )
    if image:
        return (
            f"{scene}\nThe product must stay exactly as in this photo: {image}. Call edit_image with "
            f'images=["{image}"], the description above as prompt (add: keep the product unchanged, '
            f"replace only the background and lighting), and {_model_hint(model)}."
        )
    return f"{scene}\nCall generate_image with that prompt, {_model_hint(model)}, quality high, a 4:3 or 1:1 size."


def icon_set(
    subjects: Annotated[str, Field(description="Comma-separated things to draw, e.g. 'home, search, cart'.")],
    style: Annotated[str, Field(description="e.g. 'line icons, 2 px stroke, rounded'.")] = "flat line icons, rounded",
    color: Annotated[str, Field(description="One colour for the set.")] = "black",
    model: Annotated[str | None, Field(description="Model id; default: ask list_available_models.")] = None,
) -> str:
    items = [item.strip() for item in subjects.split(",") if item.strip()]
    listing = "\n".join(f"- {item}" for item in items)
    return (
        f"Make a consistent icon set, one icon per call, in this style: {style}, {color} on a "
        f"transparent background, centred, same stroke weight and padding in every icon:\n{listing}\n"
        f'For each, call generate_image with {_model_hint(model)}, a square size, output_format="png", '
        'background="transparent" where allowed, and the same seed for every icon if the model takes '
        "one. Use as_job=true for each and collect them all with get_jobs(wait_s=30)."
    )


def illustration_style(
    subject: Annotated[str, Field(description="What the illustration shows.")],
    style: Annotated[str, Field(description="e.g. 'watercolour', 'isometric', 'ukiyo-e', 'flat vector'.")],
    palette: Annotated[str | None, Field(description="Colours or mood, e.g. 'muted pastels'.")] = None,
    reference: Annotated[
        str | None, Field(description="An image whose style to follow (path, URL or atelier:// URI).")
    ] = None,
    model: Annotated[str | None, Field(description="Model id; default: ask list_available_models.")] = None,
) -> str:
    colours = f", palette: {palette}" if palette else ""
    text = f"An illustration of {subject} in a consistent {style} style{colours}; no text, no borders."
    if reference:
        return (
            f'{text}\nMatch the style of {reference}: call edit_image with images=["{reference}"], '
            f"a prompt asking for a new picture of the subject in that image's style, and "
            f"{_model_hint(model)}."
        )
    return f"{text}\nCall generate_image with that prompt and {_model_hint(model)}."


def photo_retouch(
    image: Annotated[str, Field(description="The photo to retouch (path, URL or atelier:// URI).")],
    changes: Annotated[
        str, Field(description="What to fix, e.g. 'remove the lamp post, warmer light'.")
    ] = "subtle: even skin tone, remove blemishes and dust, balanced exposure",
    mask: Annotated[str | None, Field(description="PNG whose transparent pixels mark where to change.")] = None,
    model: Annotated[str | None, Field(description="Model id; default: ask list_available_models.")] = None,
) -> str:
    masked = f', mask="{mask}"' if mask else ""
    return (
        f"Retouch the photo {image}: {changes}. Keep everything else identical — composition, faces, "
        "identity, framing and resolution.\n"
        f'Call edit_image with images=["{image}"]{masked}, that instruction as prompt and '
        f'{_model_hint(model)}; for several rounds of fixes use edit_session(action="start", image=...).'
    )


_TITLES: dict[str, tuple[str, str]] = {
    "logo": ("Logo", "A logo for a brand: three transparent-background options to choose from."),
    "product_shot": ("Product shot", "A studio product photo, or a new backdrop for a photo of the real product."),
    "icon_set": ("Icon set", "A consistent set of icons, one per subject, collected as background jobs."),
    "illustration_style": (
        "Illustration in a style",
        "An illustration in a named style, or in the style of a reference image.",
    ),
    "photo_retouch": ("Photo retouch", "Fix a photo (optionally within a mask) while keeping everything else."),
}


def add_prompts(server: MCPServer[Any]) -> None:
    """Register the image-task prompts on ``server``."""
    for fn in (logo, product_shot, icon_set, illustration_style, photo_retouch):
        title, description = _TITLES[fn.__name__]
        server.prompt(name=fn.__name__, title=title, description=description)(fn)
