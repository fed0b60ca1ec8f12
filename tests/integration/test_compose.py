"""docker-compose.yaml and Dockerfile: schema validation and consistency checks.

No Docker engine runs here, so the stack is checked statically: (a) the compose file against
the Compose specification's JSON Schema (``../shared/data/compose-spec.json``), (b) the
cross-references a schema cannot see, by ``check_compose``: services, volumes, variables,
service URLs, the MLflow server, the Celery workers and queues, the Dockerfile. Each check is
shown to fire on a mutated copy of the real file.
"""

from __future__ import annotations

import fnmatch
import os
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
COMPOSE_SCHEMA = REPO.parent / "shared" / "data" / "compose-spec.json"

# Environment every Celery worker needs to run spendpred tasks.
TASK_ENV = (
    "AIRFLOW_CONN_SPENDPRED_WAREHOUSE",
    "SPENDPRED_WAREHOUSE_URL",
    "SPENDPRED_MLFLOW_TRACKING_URI",
    "SPENDPRED_STAGING_DIR",
)
# Variables whose URL must name another service (localhost would be the container itself).
SERVICE_URL_VARS = TASK_ENV[:3]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0"}
GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "default"

# $$ is an escaped dollar; ${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?e}, ${VAR:+x} and $VAR are references.
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?(?P<arg>[^}$]*)\}|(?P<bare>[A-Za-z_]\w*))")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


# ---------------------------------------------------------------------------------------------
# Helpers


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """Return the compose file as plain data (anchors and ``<<`` merges resolved, no sharing).

    Raises ``yaml.YAMLError`` when the file is not valid YAML.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # A JSON round trip un-shares the objects YAML aliases share, so a test can mutate one
    # service without touching the others.
    return json.loads(json.dumps(data))


def read_env_file(path: Path, outer: dict[str, str] | None = None) -> dict[str, str]:
    """Return the ``KEY=VALUE`` pairs of a dotenv file as Compose reads it (``{}`` when it does not exist).

    Unquoted and double-quoted values are interpolated (``${VAR:-default}``) from the variables
    defined earlier in the file, then from ``outer`` (the shell and ``.env``); single-quoted
    values are literal; ``VALUE # comment`` loses its comment.
    """
    if not path.is_file():
        return {}
    pairs: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if value.startswith("'"):
            pairs[key.strip()] = value[1 : value.index("'", 1)]
            continue
        if value.startswith('"'):
            value = value[1 : value.index('"', 1)]
        else:
            value = value.split(" #", 1)[0].strip()
        pairs[key.strip()] = interpolate(value, {**(outer or {}), **pairs})
    return pairs


def interpolate(text: str, env: dict[str, str]) -> str:
    """Return ``text`` with compose variables resolved from ``env`` or their defaults."""

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        value = env.get(name)
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":+", "+"):
            return arg if value else ""
        return value or ""

    def resolve(part: str) -> str:
        # innermost first: ${A:-${B}/x} resolves ${B}, then ${A:-...}
        for _ in range(10):
            resolved = _VARIABLE.sub(replace, part)
            if resolved == part:
                break
            part = resolved
        return part

    parts = text.split("$$")  # escaped dollars stay literal
    return "$".join(resolve(part) for part in parts)


def strings(node: Any) -> Iterator[str]:
    """Yield every string value in a nested structure (mapping keys excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def env_files(service: dict[str, Any]) -> list[str]:
    """Return the paths of a service's ``env_file`` entries, in order."""
    entries = service.get("env_file") or []
    return [entry if isinstance(entry, str) else entry.get("path", "") for entry in ([entries] if isinstance(entries, str) else entries)]


def environment(service: dict[str, Any], env: dict[str, str] | None = None, repo: Path = REPO) -> dict[str, str]:
    """Return what a container of ``service`` gets in its environment, interpolated with ``env`` (``.env``).

    Its ``env_file`` files first (in order), then its ``environment`` (which wins), as Compose does.
    """
    env = env or {}
    result: dict[str, str] = {}
    for path in env_files(service):
        result.update(read_env_file(repo / path, env))
    block = service.get("environment") or {}
    if isinstance(block, list):
        block = dict(item.split("=", 1) if "=" in item else (item, "") for item in block)
    result.update({key: interpolate("" if value is None else str(value), env) for key, value in block.items()})
    return result


def words(service: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Return the service's entrypoint followed by its command, as interpolated words."""
    result: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        if isinstance(value, str):
            result += shlex.split(interpolate(value, env))
        else:
            result += [interpolate(str(word), env) for word in value]
    return result


def option(argv: list[str], *names: str) -> str | None:
    """Return the value of the first of ``names`` in ``argv`` (``--x v`` or ``--x=v``), else None."""
    for index, word in enumerate(argv):
        for name in names:
            if word == name and index + 1 < len(argv):
                return argv[index + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def mounts(service: dict[str, Any], env: dict[str, str]) -> list[tuple[str, str, str]]:
    """Return ``(kind, source, target)`` per volume entry; kind is volume, bind or anonymous."""
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            parts = interpolate(entry, env).split(":")
            if len(parts) == 1:
                result.append(("anonymous", "", parts[0]))
                continue
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            source = interpolate(str(entry.get("source", "")), env)
            target = str(entry.get("target", ""))
            kind = entry.get("type", "volume") if source else "anonymous"
        result.append((kind, source, target))
    return result


def celery_queues(argv: list[str]) -> list[str] | None:
    """Return the queues a ``celery worker`` command consumes, or None if it is not a worker."""
    if "celery" not in argv or "worker" not in argv:
        return None
    queues = option(argv, "--queues", "-q")
    return queues.split(",") if queues else [DEFAULT_QUEUE]


# ---------------------------------------------------------------------------------------------
# The checks


def check_compose(compose: dict[str, Any], repo: Path) -> list[str]:
    """Return the consistency problems of a loaded compose file (``[]`` when there are none).

    ``repo`` is the folder the compose file lives in: relative paths (bind mounts, env files,
    build contexts) and the ``.env`` file that defines variables are resolved against it.
    """
    services: dict[str, dict[str, Any]] = compose.get("services") or {}
    env = read_env_file(repo / ".env")
    problems = (
        _check_depends_on(services)
        + _check_volumes(compose, services, repo, env)
        + _check_variables(compose, env)
        + _check_env_files(services, repo)
        + _check_urls(services, env)
        + _check_mlflow(services, env)
        + _check_workers(services, env)
        + _check_builds(services, repo)
    )
    return sorted(set(problems))


def _check_depends_on(services: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {target: {"condition": "service_started"} for target in depends_on}
        for target, spec in depends_on.items():
            if target not in services:
                problems.append(f"{name}: depends_on names {target!r}, which is not a service")
            elif spec.get("condition") == "service_healthy":
                healthcheck = services[target].get("healthcheck") or {}
                if not healthcheck.get("test") or healthcheck.get("disable"):
                    problems.append(f"{name}: waits for {target!r} to be healthy, but {target!r} has no healthcheck")
    return problems


def _check_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], repo: Path, env: dict[str, str]
) -> list[str]:
    declared = compose.get("volumes") or {}
    problems = []
    for name, service in services.items():
        for kind, source, _target in mounts(service, env):
            if kind == "volume" and source not in declared:
                problems.append(f"{name}: named volume {source!r} is not declared under top-level volumes")
            if kind == "bind" and not source.startswith(("/", "~")) and not (repo / source).exists():
                problems.append(f"{name}: bind mount source {source!r} does not exist in the repository")
    return problems


def _check_variables(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    problems = []
    for text in strings(compose):
        for part in text.split("$$"):
            for match in _VARIABLE.finditer(part):
                name = match["braced"] or match["bare"]
                has_default = (match["op"] or "").lstrip(":") in ("-", "+")
                if not has_default and name not in env:
                    problems.append(
                        f"variable ${{{name}}} has no default (write ${{{name}:-value}}) and is not in .env"
                    )
    return problems


def _check_env_files(services: dict[str, dict[str, Any]], repo: Path) -> list[str]:
    problems = []
    for name, service in services.items():
        entries = service.get("env_file") or []
        for entry in [entries] if isinstance(entries, str) else entries:
            path = entry if isinstance(entry, str) else entry.get("path", "")
            required = True if isinstance(entry, str) else entry.get("required", True)
            if required and not (repo / path).is_file():
                problems.append(f"{name}: env_file {path!r} does not exist in the repository")
    return problems


def _check_urls(services: dict[str, dict[str, Any]], env: dict[str, str]) -> list[str]:
    problems = []
    for name, service in services.items():
        service_env = environment(service, env)
        texts = list(service_env.values()) + words(service, env)
        for text in texts:
            for url in _URL.findall(text):
                host = urlsplit(url).hostname
                if host and host not in services and host not in LOCAL_HOSTS:
                    problems.append(f"{name}: {url!r} points at host {host!r}, which is not a service")
        for var in SERVICE_URL_VARS:
            if var in service_env:
                host = urlsplit(service_env[var]).hostname
                if host not in services:
                    problems.append(f"{name}: {var} points at host {host!r}, which is not a service")
    return problems


def _check_mlflow(services: dict[str, dict[str, Any]], env: dict[str, str]) -> list[str]:
    """The tracking URI's service must run a server on that port, reachable and accepting the host."""
    problems = []
    uris = {
        value
        for service in services.values()
        for key, value in environment(service, env).items()
        if key == "SPENDPRED_MLFLOW_TRACKING_URI"
    }
    for uri in sorted(uris):
        parts = urlsplit(uri)
        if parts.hostname not in services:
            continue  # reported by _check_urls
        port = parts.port or (443 if parts.scheme == "https" else 80)
        argv = words(services[parts.hostname], env)
        where = f"service {parts.hostname!r} (tracking URI {uri})"
        if option(argv, "--port", "-p") != str(port):
            problems.append(f"{where}: its command does not listen on port {port} (--port {port})")
        if option(argv, "--host", "-h") != "0.0.0.0":
            problems.append(f"{where}: its command must bind --host 0.0.0.0 to be reachable from other containers")
        # `mlflow server` reads each option from the command line, else from its environment
        allowed = option(argv, "--allowed-hosts") or environment(services[parts.hostname], env).get("MLFLOW_SERVER_ALLOWED_HOSTS")
        host_header = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        # MLflow's default allowed hosts are localhost and private IPs: a service name is refused.
        if allowed is None or not any(
            fnmatch.fnmatch(host_header, pattern) if "*" in pattern else host_header == pattern
            for pattern in allowed.split(",")
        ):
            problems.append(f"{where}: --allowed-hosts must admit the Host header {host_header!r}")
    return problems


def _check_workers(services: dict[str, dict[str, Any]], env: dict[str, str]) -> list[str]:
    problems = []
    workers = {name: celery_queues(words(s, env)) for name, s in services.items()}
    workers = {name: queues for name, queues in workers.items() if queues is not None}
    if not any(DEFAULT_QUEUE in queues for queues in workers.values()):
        problems.append(f"no Celery worker consumes the {DEFAULT_QUEUE!r} queue")
    gpu_workers = [name for name, queues in workers.items() if GPU_QUEUE in queues]
    if not gpu_workers:
        problems.append(f"no Celery worker consumes queue {GPU_QUEUE!r}")
    for name in gpu_workers:
        devices = services[name].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if not any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices):
            problems.append(
                f"{name}: consumes queue {GPU_QUEUE!r} but has no NVIDIA device reservation "
                "(deploy.resources.reservations.devices with driver nvidia, capabilities [gpu])"
            )
    staging_volumes = set()
    for name in workers:
        service_env = environment(services[name], env)
        for var in TASK_ENV:
            if not service_env.get(var):
                problems.append(f"{name}: Celery worker lacks environment variable {var}")
        staging = service_env.get("SPENDPRED_STAGING_DIR", "")
        volume = next(
            (
                source
                for kind, source, target in mounts(services[name], env)
                if kind == "volume" and staging and (staging == target or staging.startswith(target.rstrip("/") + "/"))
            ),
            None,
        )
        if staging and volume is None:
            problems.append(f"{name}: SPENDPRED_STAGING_DIR {staging!r} is not on a named volume shared by the workers")
        staging_volumes.add(volume)
    if len(staging_volumes - {None}) > 1:
        problems.append(f"workers stage on different volumes {sorted(staging_volumes - {None})}: they must share one")
    return problems


def _check_builds(services: dict[str, dict[str, Any]], repo: Path) -> list[str]:
    problems = []
    builds = set()
    for service in services.values():
        build = service.get("build")
        if isinstance(build, str):
            builds.add((build, "Dockerfile"))
        elif build:
            builds.add((build.get("context", "."), build.get("dockerfile", "Dockerfile")))
    for context, dockerfile in sorted(builds):
        path = repo / context / dockerfile
        if not path.is_file():
            problems.append(f"build: Dockerfile {str(Path(context) / dockerfile)!r} does not exist")
        else:
            problems += check_dockerfile(path, repo / context)
    return problems


def check_dockerfile(dockerfile: Path, context: Path) -> list[str]:
    """Return the problems of a Dockerfile that extends the official Airflow image.

    Checks that ``FROM apache/airflow:<version>`` matches ``apache-airflow==<version>`` in
    ``<context>/requirements.txt``, and that every ``COPY``/``ADD`` source exists in the
    build context and is not excluded by its ``.dockerignore``.
    """
    problems = []
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]

    requirements = context / "requirements.txt"
    text_req = requirements.read_text(encoding="utf-8") if requirements.is_file() else ""
    pinned = re.search(r"^apache-airflow==(\S+)", text_req, re.M)
    images = [m for line in instructions if (m := re.match(r"FROM\s+apache/airflow:([^\s-]+)", line, re.I))]
    if not images:
        problems.append(f"{dockerfile.name}: no FROM apache/airflow:<version> line")
    elif pinned is None:
        problems.append("requirements.txt does not pin apache-airflow==<version>")
    elif images[0][1] != pinned[1]:
        problems.append(
            f"{dockerfile.name}: FROM apache/airflow:{images[0][1]} does not match apache-airflow=={pinned[1]} "
            "in requirements.txt"
        )

    dockerignore = context / ".dockerignore"
    lines = dockerignore.read_text(encoding="utf-8").splitlines() if dockerignore.is_file() else []
    ignored = [line.strip() for line in lines if line.strip() and not line.strip().startswith(("#", "!"))]
    for line in instructions:
        keyword, _, rest = line.partition(" ")
        if keyword.upper() not in ("COPY", "ADD") or "--from=" in rest:
            continue
        if rest.strip().startswith("["):
            args = json.loads(rest)
        else:
            args = [word for word in shlex.split(rest) if not word.startswith("--")]  # drop --chown= etc.
        for source in args[:-1]:
            if "://" in source:
                continue
            relative = source.strip("/") or "."
            if not list(context.glob(relative)):
                problems.append(f"{dockerfile.name}: COPY source {source!r} does not exist in the build context")
            elif any(_ignored(relative, pattern) for pattern in ignored):
                problems.append(f"{dockerfile.name}: COPY source {source!r} is excluded by .dockerignore")
    return problems


def _ignored(relative: str, pattern: str) -> bool:
    """Whether ``relative`` or a folder above it matches a .dockerignore pattern."""
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    pattern = pattern.strip("/")
    return any(
        fnmatch.fnmatch(prefix, pattern)
        or (pattern.startswith("**/") and fnmatch.fnmatch(Path(prefix).name, pattern[3:]))
        for prefix in prefixes
    )


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.fixture()
def compose() -> dict[str, Any]:
    """A fresh, mutable copy of docker-compose.yaml."""
    return load_compose()


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON Schema, or a skip when ../shared is not checked out."""
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(f"Compose JSON Schema not found at {COMPOSE_SCHEMA} (the shared/ data folder is absent)")
    return json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))


def schema_errors(compose: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Return one line per schema violation, with the path to the offending value."""
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    assert schema_errors(compose, compose_schema) == []


def test_compose_spec_rejects_an_unknown_key(compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    compose["services"]["redis"]["restart_policy"] = "always"
    errors = schema_errors(compose, compose_schema)
    assert any("restart_policy" in error for error in errors), errors


def test_compose_spec_rejects_a_device_reservation_without_capabilities(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    device = compose["services"]["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    del device["capabilities"]
    errors = schema_errors(compose, compose_schema)
    assert any("capabilities" in error for error in errors), errors


def test_compose_defines_the_expected_services(compose: dict[str, Any]) -> None:
    expected = {
        "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
        "airflow-worker", "airflow-worker-gpu", "airflow-init", "redis", "postgres", "warehouse", "mlflow",
    }  # fmt: skip
    assert expected <= set(compose["services"])
    assert compose["services"]["airflow-apiserver"]["command"] == "api-server"
    assert environment(compose["services"]["airflow-worker"])["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"


def test_compose_is_consistent(compose: dict[str, Any]) -> None:
    assert check_compose(compose, REPO) == []


def _set_env(service: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["services"][service].setdefault("environment", {})[key] = value

    return mutate


def _set_option(service: str, name: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        command = c["services"][service]["command"]
        command[command.index(name) + 1] = value

    return mutate


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "depends_on an unknown service": (
        lambda c: c["services"]["airflow-scheduler"]["depends_on"].update(ghost={"condition": "service_started"}),
        "'ghost', which is not a service",
    ),
    "waits for health of a service without healthcheck": (
        lambda c: c["services"]["redis"].pop("healthcheck"),
        "'redis' has no healthcheck",
    ),
    "undeclared named volume": (lambda c: c["volumes"].pop("spendpred-data"), "'spendpred-data' is not declared"),
    "bind mount of a missing folder": (
        lambda c: c["services"]["warehouse"]["volumes"].append("./docker/missing-initdb:/docker-entrypoint-initdb.d"),
        "'./docker/missing-initdb' does not exist",
    ),
    "variable without default": (
        lambda c: c["services"]["redis"].update(image="redis:${REDIS_TAG}"),
        "${REDIS_TAG} has no default",
    ),
    "missing env_file": (
        lambda c: c["services"]["redis"].update(env_file=["docker/missing.env"]),
        "env_file 'docker/missing.env' does not exist",
    ),
    "warehouse connection to an unknown host": (
        _set_env("airflow-worker", "AIRFLOW_CONN_SPENDPRED_WAREHOUSE", "postgresql://u:p@dwh:5432/warehouse"),
        "AIRFLOW_CONN_SPENDPRED_WAREHOUSE points at host 'dwh'",
    ),
    "warehouse URL to localhost": (
        _set_env("airflow-worker", "SPENDPRED_WAREHOUSE_URL", "postgresql+psycopg2://u:p@localhost:5432/warehouse"),
        "SPENDPRED_WAREHOUSE_URL points at host 'localhost'",
    ),
    "tracking URI to an unknown host": (
        _set_env("airflow-worker-gpu", "SPENDPRED_MLFLOW_TRACKING_URI", "http://tracking:5000"),
        "points at host 'tracking', which is not a service",
    ),
    "tracking URI on a port MLflow does not listen on": (
        _set_env("airflow-worker", "SPENDPRED_MLFLOW_TRACKING_URI", "http://mlflow:5001"),
        "does not listen on port 5001",
    ),
    "MLflow bound to the loopback interface": (
        _set_option("mlflow", "--host", "127.0.0.1"),
        "must bind --host 0.0.0.0",
    ),
    "MLflow refusing the service host name": (
        _set_env("mlflow", "MLFLOW_SERVER_ALLOWED_HOSTS", "localhost,127.0.0.1"),
        "--allowed-hosts must admit the Host header 'mlflow:5000'",
    ),
    "GPU worker without a device reservation": (
        lambda c: c["services"]["airflow-worker-gpu"].pop("deploy"),
        "airflow-worker-gpu: consumes queue 'gpu' but has no NVIDIA device reservation",
    ),
    "GPU worker on the wrong queue": (
        lambda c: c["services"]["airflow-worker-gpu"].update(command="celery worker --queues default"),
        "no Celery worker consumes queue 'gpu'",
    ),
    "no worker on the default queue": (
        lambda c: c["services"]["airflow-worker"].update(command="celery worker -q cpu"),
        "no Celery worker consumes the 'default' queue",
    ),
    "worker without the staging folder": (
        _set_env("airflow-worker", "SPENDPRED_STAGING_DIR", ""),
        "airflow-worker: Celery worker lacks environment variable SPENDPRED_STAGING_DIR",
    ),
    "staging folder not on a shared volume": (
        lambda c: c["services"]["airflow-worker-gpu"]["volumes"].remove("spendpred-data:/opt/spendpred/data"),
        "airflow-worker-gpu: SPENDPRED_STAGING_DIR '/opt/spendpred/data/staging' is not on a named volume",
    ),
    "build with a missing Dockerfile": (
        lambda c: c["services"]["mlflow"].update(build={"context": ".", "dockerfile": "Missing.Dockerfile"}),
        "Dockerfile 'Missing.Dockerfile' does not exist",
    ),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_check_compose_reports_a_broken_copy(compose: dict[str, Any], case: str) -> None:
    mutate, expected = MUTATIONS[case]
    mutate(compose)
    problems = check_compose(compose, REPO)
    assert any(expected in problem for problem in problems), problems


def test_variables_defined_in_dot_env_are_accepted(compose: dict[str, Any], tmp_path: Path) -> None:
    compose["services"]["redis"]["image"] = "redis:${REDIS_TAG}"
    (tmp_path / ".env").write_text("REDIS_TAG=7.2-bookworm\n", encoding="utf-8")
    assert not any("REDIS_TAG" in problem for problem in check_compose(compose, tmp_path))


def test_escaped_dollars_are_not_variables() -> None:
    assert interpolate('ping -d "celery@$${HOSTNAME}" ${PORT:-5000}', {}) == 'ping -d "celery@${HOSTNAME}" 5000'
    assert _check_variables({"x": 'ping -d "celery@$${HOSTNAME}"'}, {}) == []
    assert _check_variables({"x": "celery@${HOSTNAME}"}, {}) != []


def _build_context(tmp_path: Path, dockerfile: str, dockerignore: str = "") -> Path:
    (tmp_path / "requirements.txt").write_text("apache-airflow==3.3.2\ntorch==2.13.0\n", encoding="utf-8")
    (tmp_path / "dags").mkdir()
    (tmp_path / ".dockerignore").write_text(dockerignore, encoding="utf-8")
    (tmp_path / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    return tmp_path / "Dockerfile"


def test_check_dockerfile_accepts_a_matching_image(tmp_path: Path) -> None:
    path = _build_context(tmp_path, "FROM apache/airflow:3.3.2-python3.11\nCOPY requirements.txt \\\n  dags/ /opt/x/\n")
    assert check_dockerfile(path, tmp_path) == []


def test_check_dockerfile_reports_an_airflow_version_mismatch(tmp_path: Path) -> None:
    path = _build_context(tmp_path, "FROM apache/airflow:3.2.0-python3.11\n")
    assert check_dockerfile(path, tmp_path) == [
        "Dockerfile: FROM apache/airflow:3.2.0 does not match apache-airflow==3.3.2 in requirements.txt"
    ]


def test_check_dockerfile_reports_a_missing_copy_source(tmp_path: Path) -> None:
    path = _build_context(tmp_path, "FROM apache/airflow:3.3.2\nCOPY --chown=airflow:0 plugins/ /opt/plugins/\n")
    assert check_dockerfile(path, tmp_path) == [
        "Dockerfile: COPY source 'plugins/' does not exist in the build context"
    ]


def test_check_dockerfile_reports_a_copy_source_the_dockerignore_excludes(tmp_path: Path) -> None:
    path = _build_context(tmp_path, "FROM apache/airflow:3.3.2\nCOPY dags/ /opt/airflow/dags/\n", "# comment\ndags\n")
    assert check_dockerfile(path, tmp_path) == ["Dockerfile: COPY source 'dags/' is excluded by .dockerignore"]


# ---------------------------------------------------------------------------------------------
# The shared settings file (docker/spendpred.env): the compose file and scripts/cluster.sh read it

ENV_FILE = REPO / "docker" / "spendpred.env"
# Words that appear in task logs: a secret equal to (or inside) one of them would be masked there.
IDENTIFIERS = (
    "spendpred", "spendpred-regressor", "spendpred_weekly_retrain", "spendpred_nightly_scoring",
    "spendpred.publish", "airflow", "mlflow", "warehouse", "champion", "challenger", "user_spend_scores",
    "postgres", "redis", "celery", "default", "gpu",
)  # fmt: skip
SECRETS = ("AIRFLOW_DB_PASSWORD", "WAREHOUSE_PASSWORD", "MLFLOW_DB_PASSWORD", "AIRFLOW__API_AUTH__JWT_SECRET",
           "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY")  # fmt: skip


def test_every_airflow_container_reads_the_shared_settings_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name.startswith("airflow-") or name in ("mlflow", "postgres", "warehouse"):
            assert env_files(service) == ["docker/spendpred.env"], name


def test_bash_and_compose_read_the_settings_file_alike(tmp_path: Path) -> None:
    """scripts/cluster.sh sources the file with bash; Compose parses it as a dotenv file: same values."""
    outer = {"AIRFLOW_DB_HOST": "127.0.0.1", "MLFLOW_SERVER_PORT": "5050", "SPENDPRED_DATA_DIR": str(tmp_path)}
    for given in ({}, outer):
        script = f"set -a; . {shlex.quote(str(ENV_FILE))}; set +a; env -0"
        result = subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin", **given}, capture_output=True, check=True)
        from_bash = dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
        from_compose = read_env_file(ENV_FILE, given)
        assert from_compose, "docker/spendpred.env defines nothing"
        assert {key: from_bash.get(key) for key in from_compose} == from_compose


def test_cluster_script_points_every_service_at_localhost() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "cluster.sh"), "env"],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "SPENDPRED_CLUSTER_HOME": "/tmp/c"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    for var in (*TASK_ENV[:3], "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "MLFLOW_BACKEND_STORE_URI"):
        assert urlsplit(env[var].replace("db+", "")).hostname == "127.0.0.1", var
    assert env["SPENDPRED_STAGING_DIR"] == "/tmp/c/data/staging"
    assert env["SPENDPRED_TRAIN_QUEUE"] == "gpu" and env["SPENDPRED_TRAIN_POOL"] == "gpu"


def test_compose_defaults_are_safe_for_the_libraries_and_the_logs(compose: dict[str, Any]) -> None:
    from cryptography.fernet import Fernet

    env = environment(compose["services"]["airflow-worker"])
    values = {**read_env_file(ENV_FILE), **env}
    assert len(values["AIRFLOW__API_AUTH__JWT_SECRET"].encode()) >= 64  # PyJWT's minimum for HS512
    assert len(values["AIRFLOW__API__SECRET_KEY"].encode()) >= 32
    Fernet(values["AIRFLOW__CORE__FERNET_KEY"].encode())  # raises on an invalid key
    for name in SECRETS:
        secret = values[name]
        assert len(secret) >= 12, f"{name} is too short"
        clashes = [word for word in IDENTIFIERS if secret.lower() in word.lower() or word.lower() in secret.lower()]
        assert not clashes, f"{name}={secret!r} overlaps the identifier(s) {clashes}: Airflow would mask them in logs"


def test_compose_settings_pass_spendpred_checks(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's environment, as Compose builds it, through spendpred's own settings and checks."""
    from sqlalchemy.engine import make_url

    from spendpred import registry
    from spendpred.config import Settings
    from spendpred.snapshot import staging_root

    for key in [k for k in os.environ if k.startswith(("SPENDPRED_", "MLFLOW_", "AIRFLOW"))]:
        monkeypatch.delenv(key)
    for name in ("airflow-worker", "airflow-worker-gpu", "airflow-scheduler", "airflow-dag-processor"):
        for key, value in environment(compose["services"][name]).items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        root = settings.artifact_root  # raises ConfigError when MLflow could not use it
        assert root.scheme == "mlflow-artifacts", name
        registry.check_artifact_root(root, settings.resolved_tracking_uri)  # contacts nothing
        assert make_url(settings.resolved_warehouse_url).get_backend_name() == "postgresql"
        assert urlsplit(settings.resolved_tracking_uri).hostname == "mlflow"
        assert str(staging_root(settings)) == "/opt/spendpred/data/staging"

        # what the DAG files read when they are parsed
        dags = str(REPO / "dags")
        if dags not in sys.path:
            sys.path.append(dags)
        import _spendpred_common

        assert _spendpred_common.default_shards() == 4
        assert _spendpred_common.train_task_kwargs() == {"pool": "default_pool", "queue": "default"}


def test_mlflow_server_reads_its_store_from_the_settings_file(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["mlflow"])
    assert urlsplit(env["MLFLOW_BACKEND_STORE_URI"]).hostname == "warehouse"
    assert env["MLFLOW_SERVE_ARTIFACTS"] == "true"
    target = next(t for kind, _s, t in mounts(compose["services"]["mlflow"], {}) if kind == "volume")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == target
