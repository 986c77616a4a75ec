"""The Helm chart and the plain manifests, with the real helm, kubectl and Kubernetes schemas.

helm and kubectl come from PATH, ``$SIC_CI_TOOLS_BIN`` or ``.ci/tools/bin`` (``.ci/bootstrap.sh``
puts them there); the tests skip with a reason where they are missing (a failure under CI).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from system_info_collector.config import load_settings
from system_info_collector.providers import COLLECTORS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "system-info-collector"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
CONFIG_SOURCE = ROOT / "src" / "system_info_collector" / "config.py"


def find_tool(name: str) -> str:
    candidates = [shutil.which(name)]
    for directory in (os.environ.get("SIC_CI_TOOLS_BIN"), str(ROOT / ".ci" / "tools" / "bin")):
        if directory:
            candidates.append(str(Path(directory) / name))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(f"{name} not found on PATH or in .ci/tools/bin (run .ci/bootstrap.sh)")


@pytest.fixture(scope="module")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="module")
def kubectl() -> str:
    return find_tool("kubectl")


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, input=stdin, env=env, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def template(helm: str, *args: str) -> str:
    return run(helm, "template", "sic", str(CHART), "--namespace", "monitoring", *args)


def kubernetes_validate(manifests: str, tmp_path: Path) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(manifests, encoding="utf-8")
    exe = str(Path(sys.executable).parent / "kubernetes-validate")
    result = subprocess.run([exe, "--strict", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource daemonset/" in result.stdout + result.stderr


def documents(manifests: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifests) if d]


def daemonset(manifests: str) -> dict[str, Any]:
    (ds,) = [d for d in documents(manifests) if d["kind"] == "DaemonSet"]
    return ds


def collector(manifests: str) -> dict[str, Any]:
    (container,) = daemonset(manifests)["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def c_mounts(manifests: str) -> list[dict[str, Any]]:
    return list(collector(manifests)["volumeMounts"])


def sic_variables_read_by_config() -> set[str]:
    """The variables config.py names literally, plus every collector's declared ones."""
    source = CONFIG_SOURCE.read_text(encoding="utf-8")
    names = set(re.findall(r'"(SIC_[A-Z_]+)"', source))
    per_collector = re.search(r'f"SIC_\{c\.upper\(\)\}_INTERVAL"', source)
    assert per_collector, "config.py no longer builds SIC_<COLLECTOR>_INTERVAL: update this test"
    for name, c in COLLECTORS.items():
        names.add(f"SIC_{name.upper()}_INTERVAL")
        names.update(o.variable for o in c.options)
    return names - {"SIC_"}


CUSTOM_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule", "VerticalPodAutoscaler")


@pytest.fixture(scope="module")
def crd_models() -> str:
    """The npm models of the CRDs (.ci/bootstrap.sh installs them) and node to run them."""
    found = os.environ.get("SIC_CI_CRD_MODELS") or str(
        ROOT / ".ci" / "tools" / "npm" / "node_modules"
    )
    if not (Path(found) / "@kubernetes-models" / "prometheus-operator").is_dir():
        pytest.skip(f"no CRD models in {found} (run .ci/bootstrap.sh)")
    if not shutil.which("node"):
        pytest.skip("node not found on PATH")
    return found


def crd_validate(objects: list[dict[str, Any]], models: str) -> subprocess.CompletedProcess[str]:
    """.ci/validate-crs.mjs over ``objects``: each against its CRD's schema."""
    return subprocess.run(
        ["node", str(ROOT / ".ci" / "validate-crs.mjs"), models],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lint_defaults_and_every_scenario(helm: str) -> None:
    assert SCENARIOS, "no ci/*-values.yaml scenarios"
    run(helm, "lint", "--strict", str(CHART))
    for values in SCENARIOS:
        run(helm, "lint", "--strict", str(CHART), "-f", str(values))


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda v: v.name if v else "defaults")
def test_rendering_is_valid_kubernetes(helm: str, values: Path | None, tmp_path: Path) -> None:
    manifests = template(helm, *(["-f", str(values)] if values else []))
    kubernetes_validate(manifests, tmp_path)


def test_a_typo_in_values_fails(helm: str) -> None:
    for bad in (
        ["--set", "intervall=5s"],
        ["--set", "csv.rotateSise=1GB"],
        ["--set", "csv.compress=zstd"],
        ["--set", "interval=fast"],
        ["--set", "collectors.enabled={cpu,gpu}"],
        ["--set", "http.hostMetrics=true"],
        ["--set", "prometheus.monitor.enable=true"],
        ["--set", "hostNetwork=yes"],
    ):
        result = subprocess.run(
            [helm, "template", "sic", str(CHART), *bad], capture_output=True, text=True
        )
        assert result.returncode != 0, f"{bad} was accepted"
        assert "schema" in result.stderr, result.stderr


def test_defaults_are_a_hardened_daemonset(helm: str) -> None:
    manifests = template(helm)
    ds = daemonset(manifests)
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    pod = ds["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "hostPID" not in pod and "hostNetwork" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = collector(manifests)
    assert c["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 9808, "protocol": "TCP"}]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["proc"] == {"name": "proc", "mountPath": "/host/proc", "readOnly": True}
    assert mounts["root"]["readOnly"] and mounts["root"]["mountPropagation"] == "HostToContainer"
    assert mounts["sys"]["readOnly"]
    assert mounts["data"]["mountPath"] == "/data"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["hostPath"]["path"] == "/var/lib/system-info-collector"
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["command"] == ["chown", "10001:10001", "/data"]


def test_full_example_sets_every_sic_variable_with_values_the_collector_accepts(
    helm: str, tmp_path: Path
) -> None:
    manifests = template(helm, "-f", str(CHART / "ci" / "full-values.yaml"))
    env = collector(manifests)["env"]
    names = {e["name"] for e in env}
    # A bearer token excludes basic auth: ci/remote-write-bearer-values.yaml renders that one.
    exclusive = {"SIC_REMOTE_WRITE_BEARER_TOKEN_FILE"}
    missing = sic_variables_read_by_config() - names - exclusive
    assert not missing, f"not settable from values: {sorted(missing)}"

    # The literal values, as the container would see them, parse without a single problem.
    secret = next(d for d in documents(manifests) if d["kind"] == "Secret")
    password = tmp_path / "password"
    password.write_text("change-me", encoding="utf-8")
    environ: dict[str, str] = {}
    for e in env:
        if "value" in e:
            environ[e["name"]] = e["value"]
        elif e["name"] == "SIC_DB_DSN":
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["data"]
            environ["SIC_DB_DSN"] = "postgresql://sic@db.example.internal:5432/metrics"
    for name in [n for n in environ if n.endswith("_FILE")]:  # mounted Secret keys
        environ[name] = str(password)
    environ["SIC_DB_PASSWORD_FILE"] = str(password)
    # the TLS Secret's keys and the htpasswd key hold what they would hold
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-keyout", "tls.key", "-out", "tls.crt", "-days", "1", "-subj", "/CN=sic"),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    (tmp_path / "htpasswd").write_text(f"prometheus:{'$2y$05$' + 'a' * 53}\n", encoding="utf-8")
    environ["SIC_HTTP_TLS_CERT_FILE"] = str(tmp_path / "tls.crt")
    environ["SIC_HTTP_TLS_KEY_FILE"] = str(tmp_path / "tls.key")
    environ["SIC_HTTP_TLS_CLIENT_CA_FILE"] = str(tmp_path / "tls.crt")
    environ["SIC_HTTP_BASIC_AUTH_FILE"] = str(tmp_path / "htpasswd")
    for sink in ("SIC_REMOTE_WRITE", "SIC_OTLP"):
        environ[f"{sink}_TLS_CA_FILE"] = str(tmp_path / "tls.crt")
        environ[f"{sink}_TLS_CERT_FILE"] = str(tmp_path / "tls.crt")
        environ[f"{sink}_TLS_KEY_FILE"] = str(tmp_path / "tls.key")
    settings = load_settings(environ)
    assert settings.interval == 0.5
    assert settings.adaptive.enabled and settings.adaptive.interval == 0.25
    adaptive = settings.adaptive
    assert (adaptive.hold, adaptive.io_psi, adaptive.jump) == (20, 25, 40)
    assert adaptive.psi_triggers is False
    assert (settings.overhead_budget, settings.overhead_window) == (3.0, 120.0)
    assert settings.collector_intervals == {
        "memory": 1.0,
        "disk": 30.0,
        "diskio": 1.0,
        "net": 1.0,
        "system": 5.0,
        "pressure": 5.0,
        "vmstat": 5.0,
        "filefd": 30.0,
        "md": 30.0,
        "timex": 10.0,
        "bonding": 10.0,
        "sockets": 10.0,
        "netstat": 30.0,
    }
    assert settings.collector("net").interfaces_exclude.pattern == "^(lo|veth.*|cali.*)$"
    assert settings.sinks == ("csv", "postgres", "stdout", "remote_write", "otlp")
    assert settings.csv.max_total_size == 2 * 1024**3
    assert settings.postgres.schema == "metrics"
    assert settings.http.listen == ":9100"
    assert settings.http.tls_cert_file and settings.http.tls_client_ca_file
    assert settings.http.basic_auth_file
    assert (
        settings.remote_write.tls.cert_file and not settings.remote_write.tls.insecure_skip_verify
    )
    assert settings.otlp.tls.insecure_skip_verify
    assert settings.http.textfile_directory == "/host/textfile"
    textfile = next(m for m in c_mounts(manifests) if m["name"] == "textfile")
    assert textfile == {"name": "textfile", "mountPath": "/host/textfile", "readOnly": True}
    assert settings.tags == {"cluster": "prod-eu1", "team": "sre"}
    # The chart-made Secret is mounted as the password file the variable points to.
    c = collector(manifests)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "postgres-password")
    path = next(e["value"] for e in env if e["name"] == "SIC_DB_PASSWORD_FILE")
    assert path == mount["mountPath"] + "/password"


def test_default_rendering_is_accepted_by_the_collector(helm: str) -> None:
    env = collector(template(helm))["env"]
    environ = {e["name"]: e["value"] for e in env if "value" in e}
    settings = load_settings(environ)
    assert settings.sinks == ("csv",)
    assert settings.csv.directory == "/data"
    assert settings.host_paths.proc == "/host/proc"


def test_postgres_from_an_existing_secret(helm: str) -> None:
    manifests = template(helm, "-f", str(CHART / "ci" / "postgres-existing-secret-values.yaml"))
    assert not [d for d in documents(manifests) if d["kind"] == "Secret"]
    env = {e["name"]: e for e in collector(manifests)["env"]}
    assert env["SIC_DB_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "sic-db", "key": "uri"}
    assert env["SIC_SINKS"]["value"] == "postgres"
    volumes = {v["name"]: v for v in daemonset(manifests)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["postgres-password"]["secret"]["secretName"] == "sic-db"
    assert volumes["data"] == {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}
    result = subprocess.run(
        [helm, "template", "sic", str(CHART), "--set", "postgres.enabled=true"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "postgres.existingSecret" in result.stderr


def test_k8s_directory_is_the_charts_rendering(helm: str, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    run(str(ROOT / "scripts" / "render-k8s.sh"), str(out), env={**os.environ, "HELM": helm})
    generated = sorted(p.name for p in out.iterdir())
    assert generated
    _, mismatch, errors = filecmp.cmpfiles(ROOT / "k8s", out, generated, shallow=False)
    assert (mismatch, errors) == ([], []), "k8s/ is stale: run scripts/render-k8s.sh"


def test_kustomize_builds_valid_manifests(kubectl: str, tmp_path: Path) -> None:
    manifests = run(kubectl, "kustomize", str(ROOT / "k8s"))
    found_kinds = [d["kind"] for d in documents(manifests)]
    assert sorted(found_kinds) == ["DaemonSet", "Namespace", "Service", "ServiceAccount"]
    kubernetes_validate(manifests, tmp_path)
    namespace = next(d for d in documents(manifests) if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_postgres_example_patch_applies(kubectl: str, tmp_path: Path) -> None:
    patched = run(
        kubectl,
        "patch",
        "--local",
        "-f",
        str(ROOT / "k8s" / "20-daemonset.yaml"),
        "--patch-file",
        str(ROOT / "k8s" / "examples" / "daemonset-postgres-patch.yaml"),
        "-o",
        "yaml",
    )
    secret = (ROOT / "k8s" / "examples" / "postgres-secret.yaml").read_text(encoding="utf-8")
    kubernetes_validate(patched + "\n---\n" + secret, tmp_path)
    env = {e["name"]: e for e in collector(patched)["env"]}
    assert env["SIC_SINKS"]["value"] == "csv,postgres"
    environ = {k: e["value"] for k, e in env.items() if "value" in e}
    environ["SIC_DB_DSN"] = yaml.safe_load(secret)["stringData"]["dsn"]
    password = tmp_path / "password"
    password.write_text("x", encoding="utf-8")
    environ["SIC_DB_PASSWORD_FILE"] = str(password)
    assert load_settings(environ).sinks == ("csv", "postgres")


def test_chart_packages(helm: str, tmp_path: Path) -> None:
    out = run(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert (tmp_path / "system-info-collector-0.1.0.tgz").is_file(), out


# -- Prometheus, Grafana and the usual knobs ------------------------------------------------
PROMTOOL_TESTS = ROOT / "tests" / "promtool" / "alerts-test.yml"
DASHBOARDS = CHART / "dashboards"


def kinds(manifests: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in documents(manifests):
        out.setdefault(d["kind"], []).append(d)
    return out


def scenario(helm: str, name: str, *more: str) -> str:
    return template(helm, "-f", str(CHART / "ci" / f"{name}-values.yaml"), *more)


def test_custom_resources_match_their_crd_schemas(helm: str, crd_models: str) -> None:
    # kubernetes-validate has no schema for these kinds; the CRDs' own schemas check them here
    checked: set[str] = set()
    for values in [None, *SCENARIOS]:
        manifests = template(helm, *(["-f", str(values)] if values else []))
        objects = [d for d in documents(manifests) if d["kind"] in CUSTOM_KINDS]
        if not objects:
            continue
        result = crd_validate(objects, crd_models)
        name = values.name if values else "defaults"
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"
        assert result.stdout.count("valid ") == len(objects), result.stdout
        checked.update(d["kind"] for d in objects)
    assert checked == set(CUSTOM_KINDS), f"no scenario renders {set(CUSTOM_KINDS) - checked}"


def test_the_crd_check_refuses_what_the_api_server_would(helm: str, crd_models: str) -> None:
    found = kinds(scenario(helm, "service-monitor"))
    (monitor,) = found["ServiceMonitor"]
    (rules,) = found["PrometheusRule"]
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"  # not a Prometheus duration
    del rules["spec"]["groups"][0]["name"]  # a rule group needs its name
    result = crd_validate([monitor, rules], crd_models)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(x.startswith("invalid ServiceMonitor/") and "interval" in x for x in lines), lines
    assert any(x.startswith("invalid PrometheusRule/") and "name" in x for x in lines), lines


def test_defaults_have_a_service_prometheus_finds_by_its_annotations(helm: str) -> None:
    found = kinds(template(helm))
    (service,) = found["Service"]
    assert service["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9808",
        "prometheus.io/path": "/metrics",
    }
    pod = daemonset(template(helm))["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9808, "targetPort": "http", "protocol": "TCP"}
    ]
    assert (
        pod["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "true"
    )
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} & set(found)
    env = {e["name"]: e.get("value") for e in collector(template(helm))["env"]}
    assert env["SIC_PROMETHEUS_HOST_METRICS"] == "node"


def _node_relabelings(endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r
        for r in endpoint.get("relabelings", [])
        if r.get("sourceLabels") == ["__meta_kubernetes_pod_node_name"]
    ]


def test_service_monitor_names_series_after_the_node(helm: str) -> None:
    manifests = scenario(helm, "service-monitor")
    found = kinds(manifests)
    (monitor,) = found["ServiceMonitor"]
    (service,) = found["Service"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert {r["targetLabel"] for r in _node_relabelings(endpoint)} == {"instance", "node"}
    assert endpoint["relabelings"][-1]["targetLabel"] == "zone"  # the user's come after
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    assert monitor["spec"]["attachMetadata"] == {"node": True}
    # the annotation is off, so annotation-based discovery does not scrape a second time
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "false"}


def test_pod_monitor_without_a_service(helm: str) -> None:
    found = kinds(scenario(helm, "pod-monitor"))
    assert "Service" not in found
    (monitor,) = found["PodMonitor"]
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint["honorLabels"] is True
    assert not _node_relabelings(endpoint)  # nodeNameAsInstance: false
    assert monitor["spec"]["podTargetLabels"] == ["team"]
    with_node_names = template(helm, "--set", "prometheus.podMonitor.enabled=true")
    (monitor,) = kinds(with_node_names)["PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert {r["targetLabel"] for r in _node_relabelings(endpoint)} == {"instance", "node"}
    result = subprocess.run(
        [
            helm,
            "template",
            "sic",
            str(CHART),
            "--set",
            "service.enabled=false",
            "--set",
            "prometheus.monitor.enabled=true",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "service.enabled" in result.stderr


def test_host_network_and_pid_toggles(helm: str) -> None:
    pod = daemonset(scenario(helm, "host-network"))["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # Service names still resolve
    (service,) = kinds(scenario(helm, "host-network"))["Service"]
    assert service["spec"]["internalTrafficPolicy"] == "Local"


def test_the_usual_knobs(helm: str) -> None:
    manifests = scenario(helm, "hardening")
    found = kinds(manifests)
    for doc in documents(manifests):
        assert doc["metadata"]["labels"]["cost-center"] == "1234", doc["kind"]
        assert doc["metadata"]["namespace"] == "observability", doc["kind"]
    ds = daemonset(manifests)
    assert ds["metadata"]["annotations"] == {"owner": "sre"}
    assert ds["spec"]["revisionHistoryLimit"] == 3
    pod = ds["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [
        {"name": n} for n in ("sic-creds", "mirror-creds", "shared-creds")
    ]
    assert pod["priorityClassName"] == "system-node-critical"
    containers = {c["name"]: c for c in pod["containers"]}
    assert containers["collector"]["image"].startswith("mirror.example.internal/")
    assert containers["collector"]["args"] == ["run", "--interval", "2s"]
    assert "log-tail" in containers
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-disk", "chown-data"]
    (policy,) = found["NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        ds["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]
    (vpa,) = found["VerticalPodAutoscaler"]
    assert vpa["spec"]["targetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "name": ds["metadata"]["name"],
    }
    (policy_,) = vpa["spec"]["resourcePolicy"]["containerPolicies"]
    assert policy_["containerName"] == "collector"
    # the CLI takes the extra arguments after `run`
    result = subprocess.run(
        [str(Path(sys.executable).with_name("system-info-collector")), "run", "--help"],
        capture_output=True,
        text=True,
    )
    assert "--interval" in result.stdout


def _rules_file(manifests: str, path: Path) -> Path:
    (rule,) = kinds(manifests)["PrometheusRule"]
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    return path


def test_alert_rules_pass_promtool_check_and_unit_tests(helm: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    rules = _rules_file(
        template(helm, "--set", "prometheus.rules.enabled=true"), tmp_path / "rules.yml"
    )
    run(promtool, "check", "rules", str(rules))
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    out = run(promtool, "test", "rules", str(tmp_path / PROMTOOL_TESTS.name))
    assert "SUCCESS" in out
    # every alert of the chart has a unit test
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", PROMTOOL_TESTS.read_text(encoding="utf-8")))
    assert alerts == tested

    custom = _rules_file(scenario(helm, "service-monitor"), tmp_path / "custom.yml")
    run(promtool, "check", "rules", str(custom))
    groups = {g["name"]: g["rules"] for g in yaml.safe_load(custom.read_text())["groups"]}
    names = {r.get("alert") for rules_ in groups.values() for r in rules_}
    assert "SICCPUHighUsage" not in names and "SICCollectorDown" in names
    assert all(r["labels"]["team"] == "sre" for r in groups["system-info-collector.host"])
    assert groups["site"][0]["record"] == "cluster:node_cpu_utilisation:avg"


def test_dashboards_are_configmaps_for_the_grafana_sidecar(helm: str) -> None:
    maps = kinds(scenario(helm, "service-monitor"))["ConfigMap"]
    assert len(maps) == 2
    uids = set()
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "grafana"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Infrastructure"}
        ((name, text),) = cm["data"].items()
        dashboard = json.loads(text)
        assert text.strip() == (DASHBOARDS / name).read_text(encoding="utf-8").strip()
        assert dashboard["panels"] and dashboard["title"].startswith("System info collector")
        uids.add(dashboard["uid"])
    assert len(uids) == 2
    only_pg = kinds(
        template(helm, "--set", "dashboards.enabled=true", "--set", "dashboards.prometheus=false")
    )["ConfigMap"]
    assert [list(cm["data"]) for cm in only_pg] == [["system-info-collector-postgres.json"]]


def test_https_and_basic_auth_reach_the_probes_the_service_and_the_monitors(helm: str) -> None:
    tls_values = str(CHART / "ci" / "tls-values.yaml")
    manifests = template(helm, "-f", tls_values)
    c = collector(manifests)
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert env["SIC_HTTP_TLS_CERT_FILE"] == mounts["http-tls"] + "/tls.crt"
    assert env["SIC_HTTP_TLS_KEY_FILE"] == mounts["http-tls"] + "/tls.key"
    assert env["SIC_HTTP_BASIC_AUTH_FILE"] == mounts["http-basic-auth"] + "/users"
    assert "SIC_HTTP_TLS_CLIENT_CA_FILE" not in env
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["scheme"] == "HTTPS"
    docs = {d["kind"]: d for d in documents(manifests)}
    [endpoint] = docs["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {
        "name": "system-info-collector-tls",
        "key": "ca.crt",
    }
    assert endpoint["basicAuth"]["password"]["key"] == "password"
    # annotation-based discovery (the default Service annotations) is told to use HTTPS
    discovered = template(
        helm, "--set", "http.tls.enabled=true", "--set", "http.tls.existingSecret=sic-tls"
    )
    service = next(d for d in documents(discovered) if d["kind"] == "Service")
    assert service["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    assert "prometheus.io/scheme" not in docs["Service"]["metadata"].get("annotations", {})
    # mutual TLS: the kubelet has no client certificate, so the probes only open the port
    mutual = collector(template(helm, "-f", tls_values, "--set", "http.tls.clientCAKey=ca.crt"))
    for probe in (mutual["livenessProbe"], mutual["readinessProbe"]):
        assert "httpGet" not in probe and probe["tcpSocket"] == {"port": "http"}
    # without the scrape credentials the monitor would only ever get 401: refused
    failed = subprocess.run(
        [
            helm,
            "template",
            "t",
            str(CHART),
            "-f",
            tls_values,
            "--set",
            "prometheus.monitor.basicAuth=null",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode != 0
    assert "prometheus.monitor.basicAuth is needed with http.basicAuth.enabled" in failed.stderr
    # the defaults stay plain HTTP
    default = collector(template(helm))
    assert default["livenessProbe"]["httpGet"].get("scheme", "HTTP") == "HTTP"
    assert not any(e["name"].startswith("SIC_HTTP_TLS") for e in default["env"])
