"""A user's app for the tests, in plain ASGI (it runs under any server, in any environment):
it counts what it is sent, by method, path, one header and the body, and tells the counts at
GET /counts. GET /orders/N answers {"order": {...}}, POST /orders {"created": ...}, GET /threadpool
the size of the threadpool its sync code would run in. GET /flaky answers a list three times (a
run's check, then the two answers its first cell learns the shape from), then an error object
with status 200: another shape."""

import asyncio
import json

counts: dict[str, int] = {}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = await read_body(receive)
    answer = respond(scope["method"], scope["path"], dict(scope["headers"]), body)
    data = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def respond(method, path, headers, body):
    """The answer's JSON; every request but GET /counts and /threadpool is counted."""
    if path == "/counts":
        return counts
    if path == "/threadpool":
        return threadpool()
    key = f"{method} {path} {headers.get(b'x-test', b'-').decode()} {body.decode() or '-'}"
    counts[key] = counts.get(key, 0) + 1
    if path == "/flaky":
        flaky = counts[key] > 3
        return {"error": "busy"} if flaky else [{"name": "x", "n": counts[key]}]
    if path.startswith("/orders/"):
        return {"order": {"id": int(path.rsplit("/", 1)[1]), "lines": [{"sku": "a"}]}}
    if method == "POST":
        return {"created": True, "echo": json.loads(body or b"null")}
    return [{"name": "x", "n": 1}]


def threadpool() -> dict[str, object]:
    """AnyIO's default limiter's tokens, and the loop's default executor's threads if one was
    set (asyncio's own is created lazily: None until then)."""
    try:
        import anyio.to_thread

        tokens = anyio.to_thread.current_default_thread_limiter().total_tokens
    except ImportError:
        tokens = None
    executor = getattr(asyncio.get_running_loop(), "_default_executor", None)
    return {"anyio": tokens, "executor": getattr(executor, "_max_workers", None)}
