#!/usr/bin/env bash
# The main job on the embedded defaults (called by `make demo`):
#   1. seed a synthetic warehouse (SQLite under var/),
#   2. run the weekly retrain DAG through Airflow (`airflow dags test`),
#   3. run the nightly scoring DAG for the same date,
#   4. print the tier summary, the champion's metrics and the SQL to query the results.
# Sizes are chosen to finish in well under 15 minutes on a 2-core CPU; see README "Demo vs production".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}                         # absolute, or relative to the repository root
. scripts/airflow-env.sh                    # puts $VENV/bin first on PATH

# The run date D (features up to the end of D). Default: yesterday (UTC), so the warehouse is
# as fresh as a real one and the nightly DAG's first scheduled run after unpausing (which scores
# yesterday) passes the freshness check. DEMO_DATE=YYYY-MM-DD reproduces a fixed run.
DEMO_DATE=${DEMO_DATE:-$(python -c 'import datetime as d; print(d.datetime.now(d.timezone.utc).date() - d.timedelta(days=1))')}
DEMO_SEED=${DEMO_SEED:-42}                    # the synthetic world (the model seed is SPENDPRED_SEED)
DEMO_USERS=${DEMO_USERS:-2000}
DEMO_EPOCHS=${DEMO_EPOCHS:-2}
DEMO_FREEZE=${DEMO_FREEZE:-bottom-k:4}      # fine-tune the top 2 of MiniLM's 6 layers (CPU budget)
DEMO_SHARDS=${DEMO_SHARDS:-2}

export AIRFLOW__LOGGING__LOGGING_LEVEL=${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}
export TQDM_DISABLE=1
# `airflow dags test` runs one task at a time in this process: it may use every core
export SPENDPRED_CONCURRENT_TASKS=1

step() { printf '\n==> %s\n' "$*"; }
# the message of matching log lines, without Airflow's timestamp/level and logger/location
summarise() { grep -E "$1" "$2" | sed -E 's/^[^]]*\] //; s/ +\[[A-Za-z_.]+\] +loc=.*$//' || true; }
started=$(date +%s)

step "Airflow metadata database ($AIRFLOW_HOME)"
airflow db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/migrate.log"; exit 1; }

step "Synthetic warehouse: $DEMO_USERS users, 730 days to $DEMO_DATE"
# seed creates the tables and views itself (`db init`'s work: one "warehouse initialised" line) and
# logs what it wrote in words; its JSON result, for scripts, is not shown
spendpred seed --users "$DEMO_USERS" --days 730 --end-date "$DEMO_DATE" --seed "$DEMO_SEED" >/dev/null

# Both runs get D from the as_of param; their logical date is now (the `airflow dags test`
# default), so the UI lists them at the time they ran, beside the scheduled runs.
step "Weekly retrain DAG (features as of D-90, labels in (D-90, D]; epochs=$DEMO_EPOCHS, freeze=$DEMO_FREEZE)"
airflow dags test spendpred_weekly_retrain \
    -c "{\"as_of\": \"$DEMO_DATE\", \"epochs\": $DEMO_EPOCHS, \"freeze\": \"$DEMO_FREEZE\", \"promote\": \"auto\"}" \
    >"$AIRFLOW_HOME/retrain.log" 2>&1 || { tail -n 60 "$AIRFLOW_HOME/retrain.log"; exit 1; }
summarise "test metrics|promotion of version|DagRun Finished" "$AIRFLOW_HOME/retrain.log"
# The gate may keep the new version out (it must beat past spend and the gradient-boosted trees on
# its held-out users): then there is no champion and nothing to score with. Say so, and how to go on.
if ! spendpred report --json 2>/dev/null | python -c 'import json, sys; sys.exit(0 if json.load(sys.stdin).get("champion") else 1)'; then
    printf '
no champion: the retrain did not beat the simple baselines on its held-out users (the promotion line above says which),
'
    printf 'so the nightly has no model to score with. Try another synthetic world (DEMO_SEED=7 make demo), or make this version
'
    printf 'champion by hand: VENV=%s; . scripts/airflow-env.sh && spendpred train --as-of %s --promote force
' "$VENV" "$DEMO_DATE"
    exit 1
fi

step "Nightly scoring DAG (as of $DEMO_DATE, $DEMO_SHARDS shards)"
airflow dags test spendpred_nightly_scoring \
    -c "{\"as_of\": \"$DEMO_DATE\", \"shards\": $DEMO_SHARDS, \"model\": \"champion\", \"dry_run\": false}" \
    >"$AIRFLOW_HOME/scoring.log" 2>&1 || { tail -n 60 "$AIRFLOW_HOME/scoring.log"; exit 1; }
summarise "published [0-9]+ scores|DagRun Finished" "$AIRFLOW_HOME/scoring.log"

step "Result"
spendpred report 2>/dev/null
printf '\nevaluation report of the champion: %s\n' "$(ls -d "$SPENDPRED_HOME"/staging/train/*/model/evaluation/report.md 2>/dev/null | tail -n 1)"
printf 'Airflow logs: %s/{retrain,scoring}.log   MLflow UI: mlflow ui --backend-store-uri sqlite:///%s/mlflow.db\n' "$AIRFLOW_HOME" "$SPENDPRED_HOME"
printf 'demo finished in %ss\n' "$(( $(date +%s) - started ))"
