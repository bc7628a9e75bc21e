# tonne developer entry points. Everything runs from the project venv (.venv).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: venv up down status test proto lint clean-run

# (Re)install only when pyproject.toml changes; the stamp records the last install.
$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	.venv/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV_STAMP)
.venv: $(VENV_STAMP)

# `make up INSTANCES=2` runs two processes of each service in one consumer group.
INSTANCES ?= 1
up: $(VENV_STAMP)
	$(PY) -m deploy.stack up --instances $(INSTANCES)

down:
	$(PY) -m deploy.stack down

status:
	$(PY) -m deploy.stack status

# pytest provisions its own ephemeral Kafka/PostgreSQL (tests/conftest.py);
# pass extra arguments with e.g. `make test PYTEST_ARGS="-k kafka -x"`.
test: $(VENV_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

proto: $(VENV_STAMP)
	$(PY) -m services.common.contracts

lint: $(VENV_STAMP)
	$(PY) -m ruff check . && $(PY) -m mypy services deploy tests bench

# Removes runtime state (logs, data, pids) but keeps the downloaded Kafka jars.
clean-run:
	@if [ -f .run/state.json ]; then echo "stack state found: run 'make down' first" >&2; exit 1; fi
	find .run -mindepth 1 -maxdepth 1 ! -name kafka -exec rm -rf {} +
	if [ -d .run/kafka ]; then find .run/kafka -mindepth 1 -maxdepth 1 ! -name lib -exec rm -rf {} +; fi
