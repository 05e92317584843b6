"""docs/schema/*.json is what the output models say, and the models take what the producers emit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from sci_fetch.observe.outputs import SCHEMAS, StatusSnapshot, VerifyProblem
from sci_fetch.observe.schema import main, schema_texts

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "schema"


def test_committed_schemas_are_the_models_schemas():
    committed = {p.name: p.read_text(encoding="utf-8") for p in COMMITTED.glob("*.json")}
    generated = schema_texts()
    assert sorted(committed) == sorted(generated), "run: python -m sci_fetch.observe.schema"
    for name, text in generated.items():
        assert committed[name] == text, f"docs/schema/{name} is stale; run: python -m sci_fetch.observe.schema"


def test_the_generator_writes_one_file_per_document(tmp_path, capsys):
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SCHEMAS)
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / name) for name in SCHEMAS]
    plan = json.loads((tmp_path / "plan-command.json").read_text())
    assert plan["additionalProperties"] is False
    assert plan["properties"]["fit"]["enum"] == ["fits", "tight", "exceeds"]
    assert "exit_code" in plan["required"]
    status = json.loads((tmp_path / "status-file.json").read_text())
    assert "exit_code" not in status["required"] and "images" in status["required"]


def test_a_key_the_schema_does_not_name_is_refused():
    with pytest.raises(ValidationError, match="colour"):
        VerifyProblem(image_id="p:1", destination="a.jpg", kind="md5", detail="x", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="kind"):
        VerifyProblem(image_id="p:1", destination="a.jpg", kind="smell", detail="x")  # type: ignore[arg-type]


def test_every_committed_schema_is_draft_2020_12_json_schema():
    from jsonschema import Draft202012Validator

    for path in COMMITTED.glob("*.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_optional_keys_appear_only_when_set(snapshot_model: StatusSnapshot):
    assert "exit_code" not in snapshot_model.document() and "processes" not in snapshot_model.document()
    final = snapshot_model | {"exit_code": 0, "processes": 2}
    assert final.document()["exit_code"] == 0 and final.document()["processes"] == 2
    assert final.document()["eta_seconds"] is None  # a null that was set stays in the JSON


@pytest.fixture
def snapshot_model() -> StatusSnapshot:
    from sci_fetch.observe.stats import Stats
    from sci_fetch.observe.status_file import snapshot

    return snapshot(Stats(total=None), (0.0, 0.0), [], "running", "")
