# Read by gunicorn through `--config` (see servers/registry.py); bind and workers come from argv.
worker_class = "uvicorn_worker.UvicornWorker"  # uvloop and httptools, as with plain uvicorn
accesslog = None
errorlog = "-"
loglevel = "warning"
# A collapsed sync worker keeps its event loop alive (its threads are the ones stuck), so the
# arbiter's heartbeat timeout does not fire; keep gunicorn's default rather than hide a stall.
timeout = 30
graceful_timeout = 5
