"""Deployment files: Dockerfile, docker-compose.yml, deploy/ (nginx, Prometheus, Grafana, k8s).

No Docker engine or cluster is needed: hadolint lints the Dockerfile, Debian's docker-compose
resolves the compose file, kubernetes-validate checks the manifests against the Kubernetes
schemas, and the Dockerfile's own CMD and HEALTHCHECK run outside Docker (same command, same
ENV, the repo's models/). A missing tool skips its test, unless DEPLOY_TOOLS_REQUIRED=1 (set by
``.ci/run``, which installs the tools), where it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings, SettingsInvalid, load_settings
from tests.conftest import MODELS, REPO
from tests.helpers import free_port

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SERVE_CMD = ["python", "-m", "app.cli", "serve", "--host", "0.0.0.0", "--port", "8000"]
SETTINGS_ENV = {f"SEQSERVE_{name.upper()}" for name in Settings.model_fields}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("DEPLOY_TOOLS_REQUIRED") == "1":
            pytest.fail(f"DEPLOY_TOOLS_REQUIRED=1 but {name} is not installed")
        pytest.skip(f"{name} not installed (.ci/run installs it)")
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without any SEQSERVE_* or Prometheus settings of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQSERVE_", "COMPOSE_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [rest for kw, rest in self.instructions if kw == keyword]
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in order (comment lines dropped, continuations
    joined, as Docker does)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or (not raw.strip() and not pending):
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            parent = next((s for s in stages if s.name == base), None)
            stages.append(Stage(name, base, dict(parent.env) if parent else {}))
        else:
            stage = stages[-1]
            stage.instructions.append((keyword, rest))
            if keyword == "ENV":
                for item in shlex.split(rest):
                    key, _, value = item.partition("=")
                    stage.env[key] = value
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage], Stage]:
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    return args, {s.name: s for s in stages}, stages[-1]


def test_hadolint_finds_no_errors() -> None:
    done = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "error", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_shape(dockerfile: tuple[dict[str, str], dict[str, Stage], Stage]) -> None:
    args, stages, final = dockerfile
    # `docker build .` gives the CPU image; the GPU image is `--target gpu`
    assert final.name == "cpu" and {"builder", "gpu-builder", "gpu"} <= set(stages)
    # base images pinned by a full version tag
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", args["PYTHON_IMAGE"])
    assert re.fullmatch(
        r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"]
    )
    for stage in stages.values():
        assert ":" in stage.base or stage.base in stages, stage.base
        assert not stage.base.endswith(":latest")
    # dependencies: the serving extra only, pinned; the runtime stages copy the venv
    for builder in (stages["builder"], stages["gpu-builder"]):
        installs = " ".join(rest for kw, rest in builder.instructions if kw == "RUN")
        assert "-c constraints-serve.txt '.[serve]'" in installs
        assert "torch" not in installs and "[train]" not in installs and "[dev]" not in installs
    assert "onnxruntime-gpu==" in " ".join(r for _, r in stages["gpu-builder"].instructions)
    assert "torch" not in (REPO / "constraints-serve.txt").read_text()
    for runtime in (stages["cpu"], stages["gpu"]):
        copies = [rest for kw, rest in runtime.instructions if kw == "COPY"]
        assert any(c.startswith("--from=") and "/opt/venv" in c for c in copies), copies
        assert runtime.last("USER") == "10001"
        assert json.loads(runtime.last("CMD") or "null") == SERVE_CMD
        assert "/readyz" in (runtime.last("HEALTHCHECK") or "")
        assert "WEB_CONCURRENCY" in runtime.env and runtime.env["PATH"].startswith("/opt/venv/bin")
    # the GPU image asks for CUDA first, CPU as the fallback, through the settings
    providers = json.loads(stages["gpu"].env["SEQSERVE_PROVIDERS"])
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert Settings(models_dir=MODELS, providers=providers).providers == providers


def test_gpu_providers_fall_back_to_cpu_with_one_warning(
    dockerfile: tuple[dict[str, str], dict[str, Stage], Stage], caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime as ort

    from app.runtime import resolve_providers

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing to fall back from")
    providers = json.loads(dockerfile[1]["gpu"].env["SEQSERVE_PROVIDERS"])
    with caplog.at_level("WARNING", logger="app.runtime"):
        assert resolve_providers(providers) == ["CPUExecutionProvider"]
    assert len(caplog.records) == 1 and "CUDAExecutionProvider" in caplog.records[0].getMessage()


def test_dockerignore_keeps_data_runs_caches_tests_and_secrets_out() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", "data", "runs", "tests", "training", ".env", "**/__pycache__"):
        assert entry in ignored, entry
    assert ".pytest_cache" in ignored and ".mypy_cache" in ignored
    # what the image copies must stay in the context
    assert not ignored & {"app", "models", "pyproject.toml", "constraints-serve.txt"}


@pytest.mark.slow
def test_container_cmd_outside_docker_reaches_readyz(
    dockerfile: tuple[dict[str, str], dict[str, Stage], Stage], tmp_path: Path
) -> None:
    """The final stage's CMD and HEALTHCHECK, with its ENV (PATH aside: this interpreter is the
    venv), the repo's models/ for /srv/models, and a free port instead of 8000."""
    _, _, final = dockerfile
    cmd = json.loads(final.last("CMD") or "null")
    port = free_port()
    argv = [sys.executable] + [str(port) if a == "8000" else a for a in cmd[1:]]
    image_env = {k: v for k, v in final.env.items() if k != "PATH"}
    assert image_env["SEQSERVE_MODELS_DIR"] == "/srv/models"
    image_env["SEQSERVE_MODELS_DIR"] = str(MODELS)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=_clean_env(**image_env), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        body: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    body = json.load(r)
                break
            except OSError:
                time.sleep(0.1)
        assert body.get("status") == "ready", log.read_text()[-3000:]
        shipped = len(list(MODELS.glob("*/*/*/card.json")))
        assert len(body["models"]) == shipped and not body["failed"], body

        # the HEALTHCHECK command, as Docker would run it in the container
        health = final.last("HEALTHCHECK") or ""
        check = json.loads(health.split(" CMD ", 1)[1])
        check = [sys.executable] + [a.replace(":8000/", f":{port}/") for a in check[1:]]
        assert subprocess.run(check, timeout=30).returncode == 0

        # `docker stop` sends SIGTERM: the server drains and exits cleanly
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------------------------- compose


def _compose_vars() -> set[str]:
    return set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))


def _env_example() -> dict[str, str]:
    """The variables .env.example sets (comment lines dropped)."""
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return dict(pairs)


def _env_example_commented() -> set[str]:
    """Variables listed but commented out (``# NAME=``): documented, set by the user."""
    return set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=$", ENV_EXAMPLE.read_text(), flags=re.M))


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [_tool("docker-compose"), "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _mounts(service: dict[str, Any]) -> list[str]:
    """Volumes as source:target[:ro], whichever syntax `config` printed them in."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            v = f"{v['source']}:{v['target']}" + (":ro" if v.get("read_only") else "")
        out.append(v)
    return out


def _ports(service: dict[str, Any]) -> list[str]:
    return [
        f"{p['published']}:{p['target']}" if isinstance(p, dict) else str(p)
        for p in service.get("ports", [])
    ]


def test_env_example_documents_every_compose_variable() -> None:
    documented = set(_env_example()) | _env_example_commented()
    assert _compose_vars() == documented, _compose_vars() ^ documented
    # no default secret is shipped, and no empty one either (an empty value is refused)
    assert _env_example_commented() == {"SEQSERVE_STATE_SECRET"}
    assert "SEQSERVE_STATE_SECRET" not in _env_example()


def test_a_copy_of_env_example_loads_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp .env.example .env` then `seqserve serve` starts (settings read from .env)."""
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    for name in list(os.environ):
        if name.startswith("SEQSERVE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.state_secret is None and settings.state_max_age_s == 0
    lines = ENV_EXAMPLE.read_text().splitlines()
    in_file = dict(line.split("=", 1) for line in lines if line.startswith("SEQSERVE_"))
    assert settings.memory_budget_mb == int(in_file["SEQSERVE_MEMORY_BUDGET_MB"])


def test_the_k8s_secret_placeholder_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Applied unedited, the template's placeholder must stop the pods, not sign tokens."""
    (secret,) = [d for d in _k8s_docs().values() if d["kind"] == "Secret"]
    monkeypatch.setenv("SEQSERVE_STATE_SECRET", secret["stringData"]["SEQSERVE_STATE_SECRET"])
    with pytest.raises(SettingsInvalid, match="SEQSERVE_STATE_SECRET is invalid"):
        load_settings()


def test_compose_config_resolves_and_requires_the_state_secret(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    example = ENV_EXAMPLE.read_text()
    env_file.write_text(example)
    missing = _compose_config(env_file)
    assert missing.returncode != 0 and "set SEQSERVE_STATE_SECRET" in missing.stderr

    env_file.write_text(
        example.replace("\n# SEQSERVE_STATE_SECRET=\n", "\nSEQSERVE_STATE_SECRET=\n")
    )
    empty = _compose_config(env_file)
    assert empty.returncode != 0 and "set SEQSERVE_STATE_SECRET" in empty.stderr

    env_file.write_text(
        example.replace("\n# SEQSERVE_STATE_SECRET=\n", "\nSEQSERVE_STATE_SECRET=s3\n")
    )
    done = _compose_config(env_file)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"api", "api-gpu", "lb", "prometheus", "grafana"}
    for name in ("api", "api-gpu"):
        api = services[name]
        assert api["environment"]["SEQSERVE_STATE_SECRET"] == "s3"
        assert {k for k in api["environment"] if k.startswith("SEQSERVE_")} <= SETTINGS_ENV
        assert api["read_only"] is True and api["restart"] == "unless-stopped"
        assert "/readyz" in " ".join(api["healthcheck"]["test"])
        assert api["deploy"]["resources"]["limits"]["memory"]
        assert any(v.endswith(":/srv/models:ro") for v in _mounts(api)), api["volumes"]
    assert services["api"]["deploy"]["replicas"] == 2
    gpu = services["api-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "gpu"
    assert gpu["networks"]["default"]["aliases"] == ["api"]  # one pool for nginx and Prometheus
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert "CUDAExecutionProvider" in gpu["environment"]["SEQSERVE_PROVIDERS"]
    assert services["api"]["build"]["target"] == "cpu"
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    api_env = services["api"]["environment"]
    for name in (
        "SEQSERVE_STATE_MAX_AGE_S",
        "SEQSERVE_HEADER_TIMEOUT_S",
        "SEQSERVE_BODY_TIMEOUT_S",
        "SEQSERVE_MAX_ADMISSION_WAIT_MS",
        "SEQSERVE_MAX_WAITING_REQUESTS",
        "SEQSERVE_MEMORY_BUDGET_MB",
    ):
        assert str(api_env[name]) == str(_env_example()[name]), name
    lb = services["lb"]
    # bodies nginx buffers in /tmp (a tmpfs charged to the container) cannot fill its memory
    assert any(str(t).startswith("/tmp:") and "size=" in str(t) for t in lb["tmpfs"]), lb
    assert f"{REPO}/deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in _mounts(lb)
    assert _ports(lb) == ["8000:8080"]


def test_nginx_and_prometheus_point_at_the_api_service() -> None:
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert re.search(r"^\s*server api:8000 resolve\b", conf, flags=re.M)
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["dns_sd_configs"] == [
        {"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]


def test_grafana_dashboard_queries_only_metrics_the_service_exports() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from app import metrics

    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    exported = {"up"} | {
        m._name + suffix  # private, but the family name as prometheus_client keeps it
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
        for suffix in suffixes[str(m._type)]
    }
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "seqserve.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(seqserve_\w+|up)\b(?=[{\[ )])", e)}
    assert len(used) >= 8 and used <= exported, used - exported


# ----------------------------------------------------------------------------------- kubernetes


def _k8s_docs() -> dict[str, dict[str, Any]]:
    return {
        p.name: yaml.safe_load(p.read_text())
        for p in sorted(K8S.glob("*.yaml"))
        if p.name != "kustomization.yaml"
    }


def test_kubernetes_manifests_validate() -> None:
    files = [str(K8S / name) for name in _k8s_docs()]
    for version in ("1.37.0", "1.29.0"):  # newest schemas shipped, and an older cluster
        done = subprocess.run(
            [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *files],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_manifests_fit_together() -> None:
    docs = _k8s_docs()
    kinds = {d["kind"]: d for d in docs.values()}
    assert set(kinds) == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    # every manifest but the Secret template (created by hand, never with placeholders)
    assert set(kustomization["resources"]) == set(docs) - {"secret.yaml"}

    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    for selector in (
        kinds["Service"]["spec"]["selector"],
        kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert "sessionAffinity" not in kinds["Service"]["spec"]  # state travels in signed tokens
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]

    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["spec"]["volumes"])
    refs = {next(iter(e)): e[next(iter(e))]["name"] for e in container["envFrom"]}
    assert refs == {
        "configMapRef": kinds["ConfigMap"]["metadata"]["name"],
        "secretRef": kinds["Secret"]["metadata"]["name"],
    }
    # only real settings (plus uvicorn's WEB_CONCURRENCY), and the secrets stay in the Secret
    config = set(kinds["ConfigMap"]["data"])
    secret = set(kinds["Secret"]["stringData"])
    assert config - {"WEB_CONCURRENCY"} <= SETTINGS_ENV and secret <= SETTINGS_ENV
    assert {"SEQSERVE_STATE_SECRET", "SEQSERVE_API_KEYS"} <= secret and not config & secret
    grace = float(kinds["ConfigMap"]["data"]["SEQSERVE_SHUTDOWN_GRACE_SECONDS"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace + 5  # + the preStop pause


def test_the_images_copy_every_package_serving_imports(
    dockerfile: tuple[dict[str, str], dict[str, Stage], Stage],
) -> None:
    """The runtime stages copy source folders one by one: every first-party package the server
    imports must be among them (contract/ was once missing, and the image would not start)."""
    code = (
        "import sys, app.main, app.cli; "
        f"repo = {str(REPO)!r}; "
        "print(' '.join(sorted({m.split('.')[0] for m, mod in list(sys.modules.items()) "
        "if (getattr(mod, '__file__', None) or '').startswith(repo + '/')})))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    imported = set(out.stdout.split())
    assert {"app", "contract"} <= imported and "training" not in imported
    for name in ("cpu", "gpu"):
        copies = [rest for kw, rest in dockerfile[1][name].instructions if kw == "COPY"]
        copied = {c.split()[0] for c in copies if not c.startswith("--from=")}
        assert imported <= copied, f"{name} image lacks {sorted(imported - copied)}"
