# spendpred — every target has a one-line description: run `make help`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GX_ANALYTICS_ENABLED := False
export MLFLOW_DISABLE_TELEMETRY := true

.DEFAULT_GOAL := help
.PHONY: help install demo airflow cluster cluster-down cluster-test test clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv (when missing) and install spendpred with pinned dependencies

demo: $(STAMP) ## Run the main job on the embedded defaults: seed, retrain DAG, scoring DAG through Airflow, print tiers
	VENV=$(abspath $(VENV)) scripts/demo.sh

# No activated venv needed: airflow-env.sh puts $(VENV)/bin first on PATH, where `airflow
# standalone` looks for the `airflow` executable of its components.
airflow: $(STAMP) ## Start Airflow locally (standalone: UI on http://127.0.0.1:8080) on the demo's var/ folder
	@VENV=$(abspath $(VENV)) && . scripts/airflow-env.sh && \
	printf 'Airflow UI: http://%s:%s  user admin, password in %s\n' "$$AIRFLOW__API__HOST" "$$AIRFLOW__API__PORT" \
	    "$${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}" && \
	exec airflow standalone

cluster: $(STAMP) ## Start docker-compose.yaml's services as local processes (CeleryExecutor, MLflow server, 3 workers) under var/cluster
	VENV=$(abspath $(VENV)) scripts/cluster.sh up

cluster-down: ## Stop exactly the processes `make cluster` started
	VENV=$(abspath $(VENV)) scripts/cluster.sh down

cluster-test: $(STAMP) ## The production shape end to end: a throwaway cluster, a retrain, a nightly, and faults (about 10 min)
	$(VENV)/bin/pytest -m cluster tests/cluster

test: $(STAMP) ## Check the import layers (pyproject.toml), then run the whole test suite (PostgreSQL tests skip locally when it is down; CI requires them)
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(VENV)/bin/pytest

clean: ## Remove var/ (demo warehouse, MLflow store, staging)
	rm -rf var
