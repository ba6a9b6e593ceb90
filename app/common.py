"""What the sync and async apps share beyond the table: how a session style becomes a Depends."""

from collections.abc import Callable
from typing import Any

from fastapi import Depends

from app.settings import SessionStyle, Settings


def session_dependency(dependency: Callable[..., Any], settings: Settings) -> Any:
    """One Depends object for all routes of an app, so `limited` has one limit per process."""
    if settings.SESSION_STYLE is SessionStyle.limited:
        return Depends(dependency, max_concurrency=settings.pool_capacity)
    return Depends(dependency)
