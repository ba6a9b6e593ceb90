"""A user's ASGI app, served unedited: imported from SYNCASYNC_APP (module:attr, found on the
PYTHONPATH the harness gives: the user's APP_DIR first), with FastAPI's threadpool sized to
SYNCASYNC_TOKENS the way the project's own apps size it, inside each worker's event loop before
the app sees its first event.

Where Starlette runs sync endpoints through AnyIO (0.15 and later), its default thread limiter
gets the tokens; before that, they ran on the loop's default executor, which is then replaced by
one of that many threads. Standard library only (AnyIO where the app has it), since this runs in
the user's interpreter, with the user's packages. Its name is unique so that it cannot shadow,
or be shadowed by, a module of the user's.
"""

import asyncio
import importlib
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata


def _load(spec):
    module_name, _, attrs = spec.partition(":")
    found = importlib.import_module(module_name)
    for name in (attrs or "app").split("."):
        found = getattr(found, name)
    return found


def _anyio_threadpool():
    try:
        major, minor = (int(p) for p in metadata.version("starlette").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        # Not Starlette: AnyIO's threadpool where AnyIO is there, else the loop's executor.
        try:
            import anyio.to_thread  # noqa: F401
        except ImportError:
            return False
        return True
    return (major, minor) >= (0, 15)


USER_APP = _load(os.environ["SYNCASYNC_APP"])
TOKENS = int(os.environ.get("SYNCASYNC_TOKENS") or 0)
ANYIO = _anyio_threadpool()
# Quoted: the user's interpreter may be older than 3.9, where set[int] fails when run.
_sized: "set[int]" = set()  # the event loops (by id) whose threadpool has its size


def _size(loop):
    if ANYIO:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = TOKENS
    else:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=TOKENS))
    _sized.add(id(loop))


async def app(scope, receive, send):
    if TOKENS:
        loop = asyncio.get_running_loop()
        if id(loop) not in _sized:
            _size(loop)
    await USER_APP(scope, receive, send)
