"""How an endpoint gets its database session: the one vocabulary the apps and the harness share.

Standard library only, so the harness's domain model can name a style without importing pydantic
or SQLAlchemy.
"""

from enum import StrEnum


class SessionStyle(StrEnum):
    """How an endpoint gets its database session."""

    dependency = "dependency"  # the seed's: Depends() on a generator that yields and closes
    context = "context"  # `with SessionLocal() as session:` inside the endpoint
    limited = "limited"  # the dependency, with Depends(max_concurrency=pool capacity)
