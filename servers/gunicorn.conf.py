# Read by gunicorn through `--config` (see servers/registry.py); bind and workers come from argv.
worker_class = "uvicorn_worker.UvicornWorker"  # uvloop and httptools, as with plain uvicorn
accesslog = None
errorlog = "-"
loglevel = "warning"
# A collapsed sync worker keeps its event loop alive (its threads are the ones stuck), so the
# arbiter's heartbeat timeout does not fire; keep gunicorn's default rather than hide a stall.
timeout = 30
graceful_timeout = 5


def on_starting(server):  # gunicorn passes the arbiter
    """Check the app's settings once, in the arbiter, before any worker is forked.

    A worker that exits on invalid settings (e.g. `limited` under the 2021 stack) is otherwise
    respawned forever; raised here, the same one-line "invalid settings: ..." stops gunicorn.
    """
    from app.settings import load_settings

    load_settings()
