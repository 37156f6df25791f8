# Zorgpot: `make up` runs everything on this machine; `make test` runs the whole test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install up test lint unit integration invariant clean bench faults system-deps simulate test-postgres deploy-check fuzz

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(PY) -m ops up

lint: install
	$(VENV)/bin/ruff check --select F,E9 services shared ops tests

# Debian packages pip cannot provide (Chromium for the dashboard test, PostgreSQL for the second test run,
# docker-compose and promtool for the deployment checks); installs only what is missing.
system-deps:
	bash ops/system-deps.sh

# Everything on SQLite, then the service suite again on PostgreSQL (tests/integration/conftest.py says which
# modules): the compose deployment's engine, proven by the same tests.
test: install lint system-deps
	$(PY) -m pytest -q -p no:cacheprovider
	ZORGPOT_TEST_DB=postgresql $(PY) -m pytest -q -p no:cacheprovider tests/integration

test-postgres: install system-deps
	ZORGPOT_TEST_DB=postgresql $(PY) -m pytest -q -p no:cacheprovider tests/integration

unit: install
	$(PY) -m pytest -q tests/unit

integration: install system-deps
	$(PY) -m pytest -q tests/integration

# The compose deployment's files, checked without a Docker engine (test_deploy_config.py does the same).
deploy-check: system-deps
	docker-compose --env-file .env.example -f docker-compose.yml config -q
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/alerts.yml

# Statements add up to the accepted care, per arrangement, on the running stack (exit 1 if not).
invariant: install
	$(PY) -m ops invariant

# Stream daily care registrations for the demo region into the running stack (make up), so the dashboard
# at /dashboard moves; e.g. make simulate SIMULATE_ARGS="--speed 10 --days 40".
simulate: install
	$(PY) -m ops simulate $(SIMULATE_ARGS)

clean:
	rm -rf var .pytest_cache

bench: install
	$(PY) -m ops.bench $(BENCH_ARGS)
	$(PY) -m ops.bench_settlement

# Fault injection (ops/faults.py): SIGKILL each service and restart the broker during a 50,000-registration
# run, then check every cent; e.g. make faults FAULTS_ARGS="--registrations 10000 --seed 1".
faults: install
	$(PY) -m ops.faults $(FAULTS_ARGS)

# Fuzz the gateway from its OpenAPI (schemathesis) on a stack of its own, as coordinator, school and
# municipality: ~2,600 requests; exit 1 on any 5xx or a 4xx without a detail. FUZZ_ARGS="--seed N --examples N".
fuzz: install
	$(PY) -m ops.fuzz $(FUZZ_ARGS)
