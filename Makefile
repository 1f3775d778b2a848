# `make test` and `make demo` work on a fresh machine: they build .venv and install
# the project, its dev extras and every plugin package under plugins/ into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)
STAMP  := $(VENV)/.installed

.PHONY: install test lint typecheck pytest demo bench soak clean postgres redis-server django-tests

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install only when a pyproject changes; editable, so source edits need no reinstall.
# The tests' own plugin (tests/fixtures/mailer-testplugin) is never installed: the test
# suite puts it on sys.path, so `mailer providers` of a demo install does not list it.
$(STAMP): $(BIN)/python pyproject.toml $(PLUGINS)
	$(BIN)/python -m pip uninstall -q -y mailer-testplugin 2>/dev/null || true
	$(BIN)/python -m pip install -q -e '.[dev]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

install: $(STAMP) postgres redis-server

# The Postgres outbox's tests start their own cluster (tests/pgcluster.py); install the
# server when it is missing and we can (root with apt-get, as on CI). Otherwise those
# tests are skipped and say why.
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
		else \
			echo "postgresql is not installed (needs root and apt-get): its tests will be skipped"; \
		fi; \
	fi

# The shared health store's tests start their own Redis (tests/health/redis_kit.py), the
# same way; without root and apt-get they are skipped and say why.
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends redis-server; \
		else \
			echo "redis-server is not installed (needs root and apt-get): its tests will be skipped"; \
		fi; \
	fi

# tools/check_imports.py: no import cycle in src/ and the layer table of DESIGN.md kept.
lint: install
	$(BIN)/ruff check src tests plugins benchmarks tools
	$(BIN)/ruff format --check src tests plugins benchmarks tools
	$(BIN)/python tools/check_imports.py src

typecheck: install
	$(BIN)/mypy

pytest: install django-tests
	$(BIN)/pytest -q tests $(wildcard plugins/*/tests)

# Django's own mail tests (tests/mail/tests.py of the installed Django's sdist, from PyPI
# with pip download --no-binary), cached under .venv and never committed: the suite runs
# its BaseEmailBackendTests against our backend (tests/integrations/test_django_suite.py).
django-tests: install
	$(BIN)/python -m tests.integrations.django_suite

test: lint typecheck pytest

demo: install
	$(BIN)/mailer demo

bench: install
	$(BIN)/python benchmarks/run_all.py

# A longer run of the fault matrix (2,000 sends per fault instead of 200), and the task
# queues' chaos runs that make test leaves out; not part of CI.
soak: install
	MAILER_FAULTS_N=2000 $(BIN)/pytest -q tests/faults/test_matrix.py
	MAILER_SOAK_QUEUED=10000 $(BIN)/pytest -q -s tests/faults/test_slow_failures.py -k soak
	MAILER_SOAK_CHAOS=1 $(BIN)/pytest -q tests/tasks/test_celery_chaos.py tests/tasks/test_rq_chaos.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
