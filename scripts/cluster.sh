#!/usr/bin/env bash
# The services of docker-compose.yaml as local processes, from the same settings
# (docker/spendpred.env), for a machine without a container engine (`make cluster`):
#
#   MLflow tracking server (PostgreSQL backend, proxied artifacts)
#   Airflow 3 API server, scheduler, DAG processor, triggerer (CeleryExecutor)
#   Celery workers: cpu1 and cpu2 on the default queue, gpu on queue `gpu` (pool `gpu`)
#
# on the machine's PostgreSQL (Airflow's metadata, the warehouse and MLflow's store, three
# databases) and Redis (the broker). Usage:
#
#   scripts/cluster.sh up               start what is not running yet (initialises on first use)
#   scripts/cluster.sh down             stop exactly the processes this script started
#   scripts/cluster.sh status           one line per service
#   scripts/cluster.sh stop NAME | start NAME | restart NAME    one service (e.g. worker-cpu1, mlflow)
#   scripts/cluster.sh env              print the settings every service gets (secrets included)
#   scripts/cluster.sh exec CMD...      run CMD with those settings, e.g. `exec spendpred seed ...`
#
# Everything it writes lives under SPENDPRED_CLUSTER_HOME (default var/cluster): Airflow's home
# and logs, the admin password file, staging, MLflow's artifact store, one log and one pid file
# per service. The compose file's service names become 127.0.0.1 and the ports below (all
# overridable, e.g. to run two clusters side by side); everything else comes from
# docker/spendpred.env, exactly as the containers get it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
export PATH="$VENV/bin:$PATH"

CLUSTER_HOME=${SPENDPRED_CLUSTER_HOME:-$ROOT/var/cluster}
case $CLUSTER_HOME in /*) ;; *) CLUSTER_HOME=$ROOT/$CLUSTER_HOME ;; esac
RUN_DIR=$CLUSTER_HOME/run
LOG_DIR=$CLUSTER_HOME/logs

# -- the compose service names, on this machine -------------------------------------------------
export AIRFLOW_DB_HOST=${AIRFLOW_DB_HOST:-127.0.0.1} AIRFLOW_DB_PORT=${AIRFLOW_DB_PORT:-5432}
export AIRFLOW_DB_NAME=${AIRFLOW_DB_NAME:-spendpred_cluster_airflow}
export WAREHOUSE_HOST=${WAREHOUSE_HOST:-127.0.0.1} WAREHOUSE_DB_PORT=${WAREHOUSE_DB_PORT:-5432}
export WAREHOUSE_DB=${WAREHOUSE_DB:-spendpred_cluster_warehouse}
export MLFLOW_DB_NAME=${MLFLOW_DB_NAME:-spendpred_cluster_mlflow}
export REDIS_HOST=${REDIS_HOST:-127.0.0.1} REDIS_PORT=${REDIS_PORT:-6379} REDIS_DB=${REDIS_DB:-5}
export MLFLOW_SERVER_HOST=${MLFLOW_SERVER_HOST:-127.0.0.1} MLFLOW_SERVER_PORT=${MLFLOW_SERVER_PORT:-5050}
export AIRFLOW_API_SERVER_HOST=${AIRFLOW_API_SERVER_HOST:-127.0.0.1} AIRFLOW_API_SERVER_PORT=${AIRFLOW_API_SERVER_PORT:-8090}
export SPENDPRED_DATA_DIR=${SPENDPRED_DATA_DIR:-$CLUSTER_HOME/data}
export AIRFLOW_AUTH_DIR=${AIRFLOW_AUTH_DIR:-$CLUSTER_HOME/auth}
export MLFLOW_ARTIFACTS_DIR=${MLFLOW_ARTIFACTS_DIR:-$CLUSTER_HOME/mlartifacts}
# what the image sets: Airflow's home, the DAGs and the plugin
export AIRFLOW_HOME=${AIRFLOW_HOME:-$CLUSTER_HOME/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}
export AIRFLOW__API__HOST=$AIRFLOW_API_SERVER_HOST AIRFLOW__API__PORT=$AIRFLOW_API_SERVER_PORT
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT=${AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT:-8984}
# One machine runs every worker: each gets its own Celery node name and log-server port
# (the containers all use 8793 on their own addresses).
WORKER_LOG_PORT_BASE=${SPENDPRED_CLUSTER_LOG_PORT:-8794}
# Task slots per worker (compose: AIRFLOW_WORKER_CONCURRENCY); 1 on a 2-core machine.
WORKER_CONCURRENCY=${AIRFLOW_WORKER_CONCURRENCY:-1}
# The gpu worker trains, so the retrain's train_model goes to its queue and pool.
export SPENDPRED_TRAIN_QUEUE=${SPENDPRED_TRAIN_QUEUE:-gpu} SPENDPRED_TRAIN_POOL=${SPENDPRED_TRAIN_POOL:-gpu}

set -a
# shellcheck source=../docker/spendpred.env
. "$ROOT/docker/spendpred.env"
set +a

SERVICES=(mlflow apiserver scheduler dag-processor triggerer worker-cpu1 worker-cpu2 worker-gpu)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

pid_of() {  # the pid of a running service started by this script, else nothing
    local file=$RUN_DIR/$1.pid
    [[ -f $file ]] || return 0
    local pid
    pid=$(<"$file")
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

command_of() {  # the command line of a service
    case $1 in
        mlflow) echo "mlflow server --host $MLFLOW_SERVER_HOST --port $MLFLOW_SERVER_PORT --workers ${MLFLOW_WORKERS:-1}" ;;
        apiserver) echo "airflow api-server --host $AIRFLOW_API_SERVER_HOST --port $AIRFLOW_API_SERVER_PORT" ;;
        scheduler) echo "airflow scheduler" ;;
        dag-processor) echo "airflow dag-processor" ;;
        triggerer) echo "airflow triggerer" ;;
        worker-cpu1) echo "airflow celery worker --queues default --concurrency $WORKER_CONCURRENCY --celery-hostname cpu1@%h" ;;
        worker-cpu2) echo "airflow celery worker --queues default --concurrency $WORKER_CONCURRENCY --celery-hostname cpu2@%h" ;;
        worker-gpu) echo "airflow celery worker --queues gpu --concurrency 1 --celery-hostname gpu@%h" ;;
        *) die "unknown service '$1': one of ${SERVICES[*]}" ;;
    esac
}

service_env() {  # per-service environment, as the compose file's per-service `environment:`
    case $1 in
        # Both CPU workers share this host's cores (in compose each has its own container), so
        # torch threads per task = cores / (2 workers x their slots), never more threads than cores.
        worker-cpu1) echo "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$WORKER_LOG_PORT_BASE SPENDPRED_CONCURRENT_TASKS=$((2 * WORKER_CONCURRENCY)) SPENDPRED_WORKER_NAME=cpu1" ;;
        worker-cpu2) echo "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$((WORKER_LOG_PORT_BASE + 1)) SPENDPRED_CONCURRENT_TASKS=$((2 * WORKER_CONCURRENCY)) SPENDPRED_WORKER_NAME=cpu2" ;;
        worker-gpu) echo "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$((WORKER_LOG_PORT_BASE + 2)) SPENDPRED_CONCURRENT_TASKS=1 SPENDPRED_WORKER_NAME=gpu" ;;
        *) echo "" ;;
    esac
}

start_service() {
    local name=$1 pid
    pid=$(pid_of "$name")
    if [[ -n $pid ]]; then log "$name already running (pid $pid)"; return 0; fi
    local cmd extra
    cmd=$(command_of "$name")
    extra=$(service_env "$name")
    # setsid: the service and every process it forks share one process group, so `down` stops
    # the whole tree (Celery's pool, gunicorn/uvicorn workers) and nothing else.
    # shellcheck disable=SC2086
    env $extra setsid $cmd >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/$name.pid"
    log "started $name (pid $!): $cmd"
}

stop_service() {
    local name=$1 pid
    pid=$(pid_of "$name")
    if [[ -z $pid ]]; then rm -f "$RUN_DIR/$name.pid"; return 0; fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/$name.pid"
    log "stopped $name (pid $pid)"
}

wait_http() {  # wait_http NAME URL SECONDS
    local name=$1 url=$2 limit=$3
    for _ in $(seq 1 "$limit"); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then log "$name is up ($url)"; return 0; fi
        [[ -n $(pid_of "$name") ]] || die "$name exited: see $LOG_DIR/$name.log"
        sleep 1
    done
    die "$name did not answer $url within ${limit}s: see $LOG_DIR/$name.log"
}

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -h "$AIRFLOW_DB_HOST" -p "$AIRFLOW_DB_PORT" -U "${PGADMIN_USER:-postgres}" -d postgres "$@"; }

ensure_database() {  # ensure_database USER PASSWORD DATABASE: the role and its database, as docker/warehouse-initdb does
    local user=$1 password=$2 db=$3
    psql_admin --set=u="$user" --set=p="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'u', :'p') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'u') \gexec
SQL
    psql_admin --set=u="$user" --set=d="$db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'d', :'u') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'d') \gexec
SQL
}

init() {  # what the compose file's airflow-init and warehouse-initdb do, once
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$AIRFLOW_HOME" "$AIRFLOW_AUTH_DIR" "$SPENDPRED_DATA_DIR" "$MLFLOW_ARTIFACTS_DIR"
    [[ $SPENDPRED_STAGING_DIR == *://* ]] || mkdir -p "$SPENDPRED_STAGING_DIR"
    pg_isready -q -h "$AIRFLOW_DB_HOST" -p "$AIRFLOW_DB_PORT" || die "PostgreSQL is not answering on $AIRFLOW_DB_HOST:$AIRFLOW_DB_PORT: start it first"
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "Redis is not answering on $REDIS_HOST:$REDIS_PORT: start it first"
    ensure_database "$AIRFLOW_DB_USER" "$AIRFLOW_DB_PASSWORD" "$AIRFLOW_DB_NAME"
    ensure_database "$WAREHOUSE_USER" "$WAREHOUSE_PASSWORD" "$WAREHOUSE_DB"
    ensure_database "$MLFLOW_DB_USER" "$MLFLOW_DB_PASSWORD" "$MLFLOW_DB_NAME"
    if [[ ! -f $CLUSTER_HOME/.initialised ]]; then
        log "migrating Airflow's metadata database $AIRFLOW_DB_NAME"
        airflow db migrate >"$LOG_DIR/init.log" 2>&1 || { tail -n 30 "$LOG_DIR/init.log"; die "airflow db migrate failed"; }
        AIRFLOW_ADMIN_PASSWORD=${AIRFLOW_ADMIN_PASSWORD:-airflow} python - <<'PY'
import json, os
from pathlib import Path
path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
user = os.environ["AIRFLOW_ADMIN_USERNAME"]
passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
passwords.setdefault(user, os.environ["AIRFLOW_ADMIN_PASSWORD"])
path.write_text(json.dumps(passwords) + "\n")
path.chmod(0o600)
PY
        airflow pools set "${AIRFLOW_GPU_POOL:-gpu}" "${AIRFLOW_GPU_POOL_SLOTS:-1}" "GPU training tasks (queue gpu)" >>"$LOG_DIR/init.log" 2>&1
        spendpred db init >>"$LOG_DIR/init.log" 2>&1 || { tail -n 5 "$LOG_DIR/init.log"; die "spendpred db init failed"; }
        touch "$CLUSTER_HOME/.initialised"
        log "initialised $CLUSTER_HOME"
    fi
}

up() {
    init
    start_service mlflow
    wait_http mlflow "http://$MLFLOW_SERVER_HOST:$MLFLOW_SERVER_PORT/health" 120
    start_service apiserver
    wait_http apiserver "http://$AIRFLOW_API_SERVER_HOST:$AIRFLOW_API_SERVER_PORT/api/v2/version" 180
    local name
    for name in scheduler dag-processor triggerer worker-cpu1 worker-cpu2 worker-gpu; do start_service "$name"; done
    wait_http scheduler "http://127.0.0.1:$AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT/health" 180
    wait_workers 180
    log "cluster up: Airflow http://$AIRFLOW_API_SERVER_HOST:$AIRFLOW_API_SERVER_PORT (user $AIRFLOW_ADMIN_USERNAME, password in $AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE), MLflow http://$MLFLOW_SERVER_HOST:$MLFLOW_SERVER_PORT, logs in $LOG_DIR"
}

wait_workers() {  # every worker answers a Celery ping
    local limit=$1 want=(cpu1 cpu2 gpu) answer missing
    for _ in $(seq 1 "$limit"); do
        answer=$(celery --app airflow.providers.celery.executors.celery_executor.app inspect ping --timeout 2 2>/dev/null || true)
        missing=()
        for node in "${want[@]}"; do [[ $answer == *"$node@"* ]] || missing+=("$node"); done
        if [[ ${#missing[@]} -eq 0 ]]; then log "workers up: ${want[*]}"; return 0; fi
        sleep 1
    done
    die "worker(s) ${missing[*]} did not answer a Celery ping within ${limit}s: see $LOG_DIR/worker-*.log"
}

down() {
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_service "${SERVICES[i]}"; done
}

status() {
    local name pid
    for name in "${SERVICES[@]}"; do
        pid=$(pid_of "$name")
        printf '%-14s %s\n' "$name" "${pid:+running (pid $pid)}${pid:-stopped}"
    done
}

case ${1:-} in
    up) mkdir -p "$RUN_DIR" "$LOG_DIR"; up ;;
    down) down ;;
    status) status ;;
    start) mkdir -p "$RUN_DIR" "$LOG_DIR"; start_service "${2:?usage: cluster.sh start NAME}" ;;
    stop) stop_service "${2:?usage: cluster.sh stop NAME}" ;;
    restart) stop_service "${2:?usage: cluster.sh restart NAME}"; start_service "$2" ;;
    env) env | grep -E '^(AIRFLOW|SPENDPRED|MLFLOW|HF_|TRANSFORMERS|GX_)' | sort ;;
    exec) shift; exec "$@" ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
