"""The apps under test: `sync_app` (def + psycopg2) and `async_app` (async def + asyncpg)."""
