# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: install test demo bench clean airflow stack stack-down stack-status

$(BIN)/recsys-notify: pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	@touch $@

install: $(BIN)/recsys-notify

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

demo: install
	$(BIN)/python -m recsys_notify.demo

# Airflow UI on ./data (after `make demo`); AIRFLOW_PORT=8081 make airflow for another port.
airflow: install
	$(BIN)/python -m recsys_notify.stack standalone

# docker-compose.yaml's services natively (PostgreSQL, Redis, S3, MLflow, Airflow with 2 Celery workers).
stack: install
	$(BIN)/python -m recsys_notify.stack up

stack-down:
	$(BIN)/python -m recsys_notify.stack down

stack-status:
	$(BIN)/python -m recsys_notify.stack status

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) data .stack
