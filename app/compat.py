"""The few places where the `current` stack and the `2021` stack (requirements-2021.lock) differ.

The endpoints stay in one source (sync_app.py, async_app.py); what the older versions spell
differently or lack is decided here, by looking at what is installed:

- pydantic 1 (2021) has BaseSettings built in and `validator`; pydantic 2 has pydantic-settings
  and `field_validator`. (`orm_mode` versus `from_attributes` is spelled in app/models.py.)
- SQLAlchemy 1.4 has no `async_sessionmaker`: `sessionmaker(class_=AsyncSession)` is the same;
  nor `mapped_column`: a `Column` is mapped the same.
- FastAPI 0.63 / Starlette 0.13.6 take no `lifespan=`: the app's lifespan runs from startup and
  shutdown handlers instead.
- Starlette before 0.15 ran sync code with `loop.run_in_executor(None, ...)` on asyncio's default
  executor, which has `min(32, cpus + 4)` threads and nothing to resize: there is no AnyIO
  limiter, so THREADPOOL_TOKENS cannot be honoured and app/settings.py refuses it.
- `Depends(max_concurrency=...)` (the `limited` session style) exists since FastAPI 0.163 only;
  app/settings.py refuses `limited` where it is missing.

This module imports no FastAPI at import time, so `app.settings` stays cheap to import.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic
import sqlalchemy
import starlette

if TYPE_CHECKING:
    from fastapi import FastAPI

T = TypeVar("T")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


PYDANTIC_V1 = pydantic.VERSION.startswith("1.")
SQLALCHEMY_VERSION = sqlalchemy.__version__
SQLALCHEMY_V1 = SQLALCHEMY_VERSION.startswith("1.")
STARLETTE_VERSION = starlette.__version__
# Starlette 0.15 moved sync endpoints and dependencies from the default executor to AnyIO.
ANYIO_THREADPOOL = _version(STARLETTE_VERSION) >= (0, 15)

if PYDANTIC_V1:
    from pydantic import BaseSettings, root_validator, validator

    def field_validator(*fields: str) -> Callable[[Any], Any]:
        """pydantic 2's `field_validator` (an after-validator) as pydantic 1 spells it."""
        return validator(*fields, allow_reuse=True)

    def before_validation(fn: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> Any:
        """A function of the raw values (environment included), run before the fields'."""
        return root_validator(pre=True, allow_reuse=True)(fn)

else:
    from pydantic import field_validator, model_validator
    from pydantic_settings import BaseSettings

    def before_validation(fn: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> Any:
        """A function of the raw values (environment included), run before the fields'; pydantic
        makes it a classmethod, its first parameter being `cls`."""
        return model_validator(mode="before")(fn)


if SQLALCHEMY_V1:
    # 1.4 maps a plain Column the way 2.x maps mapped_column (which types it for mypy).
    from sqlalchemy import Column as mapped_column
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import sessionmaker

    def async_sessionmaker(bind: Any, **options: Any) -> Any:
        """SQLAlchemy 2's `async_sessionmaker(engine)` as SQLAlchemy 1.4 spells it."""
        return sessionmaker(bind, class_=AsyncSession, **options)

else:
    from sqlalchemy.ext.asyncio import async_sessionmaker
    from sqlalchemy.orm import mapped_column

__all__ = [
    "ANYIO_THREADPOOL",
    "PYDANTIC_V1",
    "SQLALCHEMY_V1",
    "SQLALCHEMY_VERSION",
    "STARLETTE_VERSION",
    "BaseSettings",
    "async_sessionmaker",
    "before_validation",
    "create_fastapi",
    "default_executor_threads",
    "field_validator",
    "has_max_concurrency",
    "mapped_column",
    "size_threadpool",
]


def default_executor_threads() -> int:
    """Threads of asyncio's default executor on Python 3.8-3.12: what sync code had in 2021."""
    return min(32, (os.cpu_count() or 1) + 4)


def has_max_concurrency() -> bool:
    """Whether `Depends(..., max_concurrency=...)` exists (FastAPI 0.163 and later)."""
    from fastapi import Depends

    return "max_concurrency" in inspect.signature(Depends).parameters


def has_dependency_scope() -> bool:
    """Whether `Depends(..., scope="function")` exists (FastAPI 0.121 and later)."""
    from fastapi import Depends

    return "scope" in inspect.signature(Depends).parameters


def size_threadpool(tokens: int) -> None:
    """Resize AnyIO's default thread limiter; call it inside the running loop (the lifespan).

    Where sync code runs on asyncio's default executor instead (Starlette < 0.15) there is no
    limiter (app/settings.py has refused an explicit THREADPOOL_TOKENS there). The loop's default
    executor is then installed here, of the size asyncio would give it, so that the side channel
    can see its threads: uvloop keeps its own out of reach.
    """
    global default_executor
    if ANYIO_THREADPOOL:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = tokens
    else:
        default_executor = CountingExecutor(max_workers=default_executor_threads())
        asyncio.get_running_loop().set_default_executor(default_executor)


class CountingExecutor(ThreadPoolExecutor):
    """asyncio's default executor, counting the jobs its threads run right now.

    ThreadPoolExecutor counts idle threads with a semaphore released after every job but taken
    only when a job is submitted, so under load it overcounts them (and the busy ones would
    come out negative); the side channel reads this count instead.
    """

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self.running = 0
        self._counting = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        def counted() -> T:
            with self._counting:
                self.running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._counting:
                    self.running -= 1

        return super().submit(counted)


# The executor sync code runs on under the 2021 stack, once size_threadpool has run.
default_executor: CountingExecutor | None = None


def create_fastapi(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]], **options: Any
) -> FastAPI:
    """`FastAPI(lifespan=lifespan, ...)`, or, where FastAPI has no `lifespan=` (0.63), the same
    context manager entered by a startup handler and exited by a shutdown handler."""
    from fastapi import FastAPI

    if "lifespan" in inspect.signature(FastAPI).parameters:
        return FastAPI(lifespan=lifespan, **options)

    exit_stack = AsyncExitStack()

    async def startup() -> None:
        await exit_stack.enter_async_context(lifespan(app))

    async def shutdown() -> None:
        await exit_stack.aclose()

    app = FastAPI(on_startup=[startup], on_shutdown=[shutdown], **options)
    return app
