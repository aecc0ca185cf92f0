"""The deployment files in deploy/: Kubernetes manifests checked against the official client's models, settings files
against irkit's own validation, and the facts that make two replicas work (no API server or docker needed).

The client's ``from_dict`` silently drops keys it does not know, so :func:`model_problems` walks each document
alongside the model classes' ``openapi_types`` (attribute → type) and ``attribute_map`` (attribute → wire name):
an unknown key or a value of the wrong type is reported with its path.
"""

from __future__ import annotations

import copy
import datetime
import re
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from pydantic import ValidationError

from irkit.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS: list[dict[str, Any]] = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "irkit.yaml").read_text()) if d]
SECRET: dict[str, Any] = yaml.safe_load((DEPLOY / "kubernetes" / "secret.example.yaml").read_text())
PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "bytes": str,  # base64 text in a manifest
    "datetime": (str, datetime.datetime),
    "date": (str, datetime.date),
}
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


def model_name(doc: dict[str, Any]) -> str:
    """``apps/v1`` + ``Deployment`` → ``V1Deployment``."""
    return doc["apiVersion"].split("/")[-1].capitalize() + doc["kind"]


def model_problems(value: Any, type_name: str, path: str = "") -> list[str]:
    """Every unknown field and wrong type in ``value`` read as the client's ``type_name``, each with its path."""
    where = path or "(document)"
    if value is None:
        return [f"{where}: null"]
    if m := re.fullmatch(r"List\[(.*)\]|list\[(.*)\]", type_name):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in model_problems(item, m[1] or m[2], f"{path}[{i}]")]
    if m := re.fullmatch(r"Dict\[str, (.*)\]|dict\(str, (.*)\)", type_name):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        out = [f"{where}: key {k!r} is not a string" for k in value if not isinstance(k, str)]
        return out + [p for k, v in value.items() for p in model_problems(v, m[1] or m[2], f"{path}.{k}")]
    if type_name == "object":  # IntOrString, RawExtension, …
        return []
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and (type_name == "bool" or not isinstance(value, bool))
        return [] if ok else [f"{where}: expected {type_name}, got {type(value).__name__} {value!r}"]
    model = getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping, got {type(value).__name__}"]
    fields = {wire: model.openapi_types[attr] for attr, wire in model.attribute_map.items()}
    out = []
    for key, item in value.items():
        sub = f"{path}.{key}" if path else str(key)
        out += model_problems(item, fields[key], sub) if key in fields else [f"{sub}: unknown field of {type_name}"]
    return out


def deserialize(doc: dict[str, Any]) -> Any:
    """The client's own reading of ``doc``, with its required-field and type validation (pydantic)."""
    return kubernetes.client.ApiClient()._ApiClient__deserialize(doc, model_name(doc))


def check(doc: dict[str, Any]) -> list[str]:
    label = f"{doc['kind']}/{doc['metadata']['name']}"
    return [f"{label}: {p}" for p in model_problems(doc, model_name(doc))]


def the(kind: str) -> dict[str, Any]:
    (doc,) = (d for d in DOCS if d["kind"] == kind)
    return doc


def container() -> dict[str, Any]:
    (c,) = the("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def port_number(port: int | str, c: dict[str, Any]) -> int:
    """A port as a number: named ports are looked up among the container's ports."""
    return port if isinstance(port, int) else {p["name"]: p["containerPort"] for p in c["ports"]}[port]


@pytest.mark.parametrize("doc", [*DOCS, SECRET], ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_is_a_valid_kubernetes_object(doc: dict[str, Any]) -> None:
    assert check(doc) == []
    obj = deserialize(doc)
    assert type(obj).__name__ == model_name(doc)
    assert obj.metadata.name == doc["metadata"]["name"]


def test_the_file_holds_every_object_a_team_install_needs() -> None:
    kinds = sorted(d["kind"] for d in DOCS)
    assert kinds == sorted(
        ["Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    )  # and no Secret: applying the file never overwrites the real one with placeholders
    assert {d["metadata"].get("namespace") for d in DOCS if d["kind"] != "Namespace"} == {"irkit"}


def test_the_checker_reports_unknown_fields_and_wrong_types_with_their_paths() -> None:
    bad = copy.deepcopy(the("Deployment"))
    bad["spec"]["replicas"] = "2"
    probe = bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    probe["prot"] = probe.pop("port")
    assert check(bad) == [
        "Deployment/irkit-serve: spec.replicas: expected int, got str '2'",
        "Deployment/irkit-serve: spec.template.spec.containers[0].readinessProbe.httpGet.prot: "
        "unknown field of V1HTTPGetAction",
    ]
    assert check({**bad, "spec": {**bad["spec"], "paused": 1}})[-1] == (
        "Deployment/irkit-serve: spec.paused: expected bool, got int 1"
    )
    unselected = copy.deepcopy(the("Deployment"))
    del unselected["spec"]["selector"]
    assert check(unselected) == []  # a missing required field is the client's own validation's to find
    with pytest.raises(ValidationError, match="V1DeploymentSpec\nselector"):
        deserialize(unselected)


def test_two_replicas_ready_on_healthz_at_the_port_the_service_targets() -> None:
    deployment, service, c = the("Deployment"), the("Service"), container()
    assert deployment["spec"]["replicas"] == 2
    (svc_port,) = service["spec"]["ports"]
    assert (svc_port["name"], svc_port["port"], service["spec"]["type"]) == ("http", 9095, "ClusterIP")
    target = port_number(svc_port["targetPort"], c)
    for probe in (c["readinessProbe"], c["livenessProbe"]):
        assert probe["httpGet"]["path"] == "/healthz"
        assert port_number(probe["httpGet"]["port"], c) == target == 9095
    assert c["livenessProbe"]["failureThreshold"] > c["readinessProbe"]["failureThreshold"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


def test_the_disruption_budget_keeps_one_of_the_deployments_pods() -> None:
    pdb, deployment = the("PodDisruptionBudget"), the("Deployment")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_secrets_come_only_from_the_secret_in_the_file() -> None:
    secret = SECRET
    env = {e["name"]: e for e in container()["env"]}
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "IRKIT_WEBHOOK_TOKEN"} <= refs.keys()
    assert {ref["name"] for ref in refs.values()} == {secret["metadata"]["name"]} == {"irkit-secrets"}
    assert {ref["key"] for ref in refs.values()} <= secret["stringData"].keys()
    assert set(secret["stringData"].values()) == {"change-me"}, "the example holds placeholders only"
    assert secret["metadata"]["namespace"] == the("Deployment")["metadata"]["namespace"]
    plain = {name: e["value"] for name, e in env.items() if "value" in e}
    assert not [n for n in plain if SECRET_NAMES.search(n)], "secret-looking env vars must use secretKeyRef"
    assert not [v for v in plain.values() if re.search(r"://[^/@\s]*:[^/@\s]*@", v)], "a password in a url"


def test_the_configmap_settings_validate_and_name_a_shared_store() -> None:
    configmap, c = the("ConfigMap"), container()
    settings = Settings.model_validate(yaml.safe_load(configmap["data"]["irkit.yaml"]))
    assert settings.store.shared is True
    assert settings.store.artifacts == "s3://irkit-records/records"
    assert settings.serve.token_env == "IRKIT_WEBHOOK_TOKEN"
    assert settings.serve.port == c["ports"][0]["containerPort"]
    # --config names the ConfigMap's key where the pod mounts it
    args = c["args"]
    (mount,) = (m for m in c["volumeMounts"] if m["mountPath"] == "/etc/irkit")
    (volume,) = (v for v in the("Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert args[args.index("--config") + 1] == "/etc/irkit/irkit.yaml"


def test_compose_runs_two_replicas_on_the_validated_compose_settings() -> None:
    settings = Settings.model_validate(yaml.safe_load((DEPLOY / "irkit.compose.yaml").read_text()))
    assert settings.store.shared is True
    assert settings.serve.token_env == "IRKIT_WEBHOOK_TOKEN"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, host_port in (("irkit-a", 9095), ("irkit-b", 9096)):
        svc = services[name]
        assert "./irkit.compose.yaml:/etc/irkit/irkit.yaml:ro" in svc["volumes"]
        assert svc["command"][svc["command"].index("--config") + 1] == "/etc/irkit/irkit.yaml"
        assert svc["ports"] == [f"{host_port}:9095"]
        assert svc["environment"]["IRKIT_WEBHOOK_TOKEN"]
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert svc["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    assert "irkit-records" in services["minio-bucket"]["command"][0]
