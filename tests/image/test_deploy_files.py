"""deploy/: the Kubernetes and AWS Batch examples parse and agree with the image and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sci_fetch.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GRACE = Settings.model_fields["grace_seconds"].default


def k8s_documents(name: str) -> list[dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_indexed_job() -> None:
    (job,) = k8s_documents("indexed-job.yaml")
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert env_of(container)["SCI_FETCH_SHARD_COUNT"] == str(spec["completions"]), "shard count must equal completions"
    assert spec["parallelism"] <= spec["completions"]
    assert pod["terminationGracePeriodSeconds"] > GRACE + 5, "the kubelet must wait longer than the engine's grace"
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
    assert container["livenessProbe"]["exec"]["command"] == ["sci-fetch-healthcheck"]
    assert container["args"][0] == "download"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/config"} <= mounts
    fail_codes = spec["podFailurePolicy"]["rules"][0]["onExitCodes"]
    assert fail_codes["containerName"] == container["name"] and set(fail_codes["values"]) == {2, 3}


def test_setup_documents() -> None:
    docs = {d["kind"]: d for d in k8s_documents("setup.yaml")}
    assert set(docs) == {"Secret", "ConfigMap", "PersistentVolumeClaim", "Pod"}
    (job,) = k8s_documents("indexed-job.yaml")
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes["settings"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert "ReadWriteMany" in docs["PersistentVolumeClaim"]["spec"]["accessModes"]
    # the ConfigMap's settings.toml is a valid sci-fetch settings file
    import tomllib

    values = tomllib.loads(docs["ConfigMap"]["data"]["settings.toml"])
    assert set(values) <= set(Settings.model_fields), set(values) - set(Settings.model_fields)
    assert values["grace_seconds"] + 5 < job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_aws_batch_files() -> None:
    definition = json.loads((DEPLOY / "aws-batch" / "job-definition.json").read_text())
    submit = json.loads((DEPLOY / "aws-batch" / "submit-job.json").read_text())
    container = definition["containerProperties"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    override = {e["name"]: e["value"] for e in submit["containerOverrides"]["environment"]}
    size = submit["arrayProperties"]["size"]
    assert 2 <= size <= 10000  # AWS Batch's array size limits
    assert override["SCI_FETCH_SHARD_COUNT"] == str(size), "shard count must equal the array size"
    assert env["SCI_FETCH_SHARD_COUNT"] == str(size), "keep the definition's default equal to the example"
    assert submit["jobDefinition"] == definition["jobDefinitionName"]
    assert container["command"][0] == "download"
    assert {n[len("SCI_FETCH_") :].lower() for n in env} <= set(Settings.model_fields)
    exits = {r["onExitCode"]: r["action"] for r in definition["retryStrategy"]["evaluateOnExit"]}
    assert exits["2"] == exits["3"] == "EXIT" and exits["*"] == "RETRY"
    mounts = {m["containerPath"] for m in container["mountPoints"]}
    assert "/data" in mounts
