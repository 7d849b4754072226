"""Test-only hooks for server subprocesses started by the reliability suite.

The suite puts this folder on ``PYTHONPATH`` of a real ``atelier-mcp`` process; Python
imports ``sitecustomize`` at start-up, so nothing in Atelier itself knows about it.
Every hook is off unless its variable is set:

- ``ATELIER_TEST_PIDFILE=<path>``: write the server's pid there (for SIGKILL and RSS).
- ``ATELIER_TEST_FAILPOINT=<name>`` (with ``ATELIER_TEST_FAILPOINT_SKIP=<k>``: let the
  first ``k`` images through): kill the process with ``os._exit(137)`` — no cleanup, no
  ``finally`` blocks, like SIGKILL — at a chosen point of publishing an image file:

  - ``mid_write``: half of the image bytes written to the hidden temp file;
  - ``before_link``: temp file complete and fsync-ed, final name not yet linked;
  - ``after_link``: final name linked, temp not yet removed, sidecar and job row not
    yet written.
- ``ATELIER_TEST_NOISY=1``: be a badly behaved neighbour — print to stdout and emit a
  warning at start-up (the server must keep stdout for MCP only).
"""

from __future__ import annotations

import os

_pidfile = os.environ.get("ATELIER_TEST_PIDFILE")
if _pidfile:
    with open(_pidfile, "w") as _out:
        _out.write(str(os.getpid()))

_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"RIFF", b"GIF8")
_point = os.environ.get("ATELIER_TEST_FAILPOINT")
if _point:
    _skip = [int(os.environ.get("ATELIER_TEST_FAILPOINT_SKIP", "0"))]
    _TEMP = ".atelier-tmp-"

    def _due() -> bool:
        if _skip[0] > 0:
            _skip[0] -= 1
            return False
        return True

    if _point == "mid_write":
        _real_write = os.write

        def _write(fd: int, data: object) -> int:
            view = bytes(data[:4]) if isinstance(data, (bytes, bytearray, memoryview)) else b""  # type: ignore[index]
            if view.startswith(_IMAGE_MAGIC):
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    target = ""
                if _TEMP in target and _due():
                    _real_write(fd, bytes(data[: len(data) // 2]))  # type: ignore[arg-type,index]
                    os._exit(137)
            return _real_write(fd, data)  # type: ignore[arg-type]

        os.write = _write  # type: ignore[assignment]
    elif _point in ("before_link", "after_link"):
        _real_link = os.link

        def _link(src: object, dst: object, *args: object, **kwargs: object) -> None:
            is_image = os.path.basename(str(src)).startswith(_TEMP) and not str(dst).endswith(".json")
            if is_image and _point == "before_link" and _due():
                os._exit(137)
            _real_link(src, dst, *args, **kwargs)  # type: ignore[arg-type]
            if is_image and _point == "after_link" and _due():
                os._exit(137)

        # Keep the capability sets truthful, or storage would fall back from its dir-fd
        # (TOCTOU-safe) code path and the test would crash a different code path.
        for _caps in (os.supports_dir_fd, os.supports_follow_symlinks):
            if _real_link in _caps:
                _caps.add(_link)
        os.link = _link  # type: ignore[assignment]

if os.environ.get("ATELIER_TEST_NOISY"):
    import sys
    import warnings

    print("noisy: hello from sitecustomize on stdout")
    sys.stdout.flush()
    warnings.warn("noisy: a start-up warning", UserWarning, stacklevel=1)
