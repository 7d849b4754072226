"""A fake queue-based vendor (submit → poll → fetch) and a provider for it.

The shape of Replicate, fal, Black Forest Labs and Midjourney gateways: submitting
returns a task id at once, the work happens on the vendor's side, and the client polls
until the images can be fetched. :class:`FakeQueueVendor` keeps its tasks outside any
provider instance, as a real vendor outlives a server process, so a test can stop a
server mid-task and let a new one resume polling. :class:`FakeQueueProvider` is a
complete queue-based provider for it (and its own plugin)::

    vendor = FakeQueueVendor(polls_before_done=2)
    atelier = build_test_atelier(tmp_path, [FakeQueueProvider(vendor)])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from atelier_core.plugin.errors import UpstreamError
from atelier_core.plugin.hookspecs import hookimpl
from atelier_core.plugin.provider import CallContext, Provider, ProviderSettings
from atelier_core.plugin.spec import ModelSpec
from atelier_core.plugin.types import ImageRequest, ProviderImage, ProviderResult
from atelier_core.testing.fakes import fake_spec
from atelier_core.testing.samples import make_image

__all__ = ["FakeQueueProvider", "FakeQueueVendor", "VendorTask"]

# Vendors by URL: a provider reaches its vendor through settings.base_url alone, as a real
# provider does, so a new instance with the same settings (a restart) finds the same tasks.
_VENDORS: dict[str, FakeQueueVendor] = {}
_VENDOR_IDS = itertools.count(1)


@dataclass
class VendorTask:
    """One task at the fake vendor."""

    id: str
    width: int
    height: int
    fmt: str
    n: int
    polls: int = 0
    state: str = "queued"  # queued | done | cancelled
    held: bool = False  # waits for release() instead of finishing after polls_before_done


@dataclass
class FakeQueueVendor:
    """An in-memory queue-based vendor.

    A task finishes after ``polls_before_done`` polls, or, with ``hold=True``, only when
    :meth:`release` is called. ``submitted``, ``polled`` and ``cancelled`` record what the
    vendor saw.
    """

    polls_before_done: int = 1
    hold: bool = False
    tasks: dict[str, VendorTask] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    url: str = ""  # set on creation: what a provider's base_url names to reach this vendor

    def __post_init__(self) -> None:
        self.url = f"memory://fake-queue-vendor-{next(_VENDOR_IDS)}"
        _VENDORS[self.url] = self

    def submit(self, request: ImageRequest) -> str:
        task = VendorTask(
            id=f"task-{next(self._ids)}",
            width=request.width or 512,
            height=request.height or 512,
            fmt=request.output_format or "png",
            n=request.n,
            held=self.hold,
        )
        self.tasks[task.id] = task
        self.submitted.append(task.id)
        return task.id

    def poll(self, task_id: str) -> list[bytes] | None:
        task = self.tasks.get(task_id)
        if task is None:
            raise KeyError(task_id)
        self.polled.append(task_id)
        task.polls += 1
        if task.state == "cancelled":
            return []
        if not task.held and task.polls >= self.polls_before_done:
            task.state = "done"
        if task.state != "done":
            return None
        return [make_image(task.width, task.height, task.fmt) for _ in range(task.n)]

    def cancel(self, task_id: str) -> None:
        self.cancelled.append(task_id)
        if task_id in self.tasks:
            self.tasks[task_id].state = "cancelled"

    def release(self, task_id: str | None = None) -> None:
        """Let held tasks (or one) finish at their next poll."""
        for task in self.tasks.values():
            if task_id is None or task.id == task_id:
                task.held = False
                task.state = "done" if task.state == "queued" else task.state


class FakeQueueProvider(Provider):
    """A queue-based provider for :class:`FakeQueueVendor`: submit, poll, cancel.

    Everything it needs to resume is the task id and the request, so a new instance (a
    restarted server) polls a task an earlier one submitted.
    """

    poll_interval_s = 0.01

    def __init__(
        self, vendor: FakeQueueVendor | None = None, name: str = "queue", models: tuple[ModelSpec, ...] | None = None
    ) -> None:
        # Per-instance declarations (class variables on real providers).
        self.name = name  # type: ignore[misc]
        self.title = f"Fake queue vendor {name}"  # type: ignore[misc]
        self.models = models or (fake_spec("queued-image", n_max=2),)  # type: ignore[misc]
        self.needs_key = False  # type: ignore[misc]
        super().__init__()
        vendor = vendor if vendor is not None else FakeQueueVendor()
        self.settings = self.settings.model_copy(update={"base_url": vendor.url})

    @property
    def vendor(self) -> FakeQueueVendor:
        return _VENDORS[self.settings.base_url or ""]

    def configure(self, settings: ProviderSettings) -> None:
        if settings.base_url is None:  # keep the vendor this instance was made for
            settings = settings.model_copy(update={"base_url": self.settings.base_url})
        super().configure(settings)

    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        register(self)

    async def submit(self, request: ImageRequest, ctx: CallContext) -> str:
        return self.vendor.submit(request)

    async def poll(self, task_id: str, request: ImageRequest, ctx: CallContext) -> ProviderResult | None:
        await anyio.sleep(0)  # noqa: ASYNC115 -- where a real provider awaits the vendor (anyio.lowlevel would import sniffio)
        try:
            images = self.vendor.poll(task_id)
        except KeyError:
            raise UpstreamError(
                f"the vendor knows no task {task_id}", code="upstream_not_found", provider=self.name
            ) from None
        if images is None:
            await ctx.progress(0.5, f"task {task_id} is still running")
            return None
        if not images:
            raise UpstreamError(f"task {task_id} was cancelled at the vendor", code="cancelled", provider=self.name)
        return ProviderResult(images=[ProviderImage(data=data) for data in images], request_id=task_id)

    async def cancel(self, task_id: str) -> None:
        self.vendor.cancel(task_id)
