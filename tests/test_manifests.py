import json

import pytest
from click.testing import CliRunner

from common import UserError
from cli import genies
from manifests import load_manifest


def test_genies_manifest_has_15_labelled_shifts():
    shifts = load_manifest("genies")
    assert len(shifts) == 15
    assert {s.label for s in shifts} == {"extreme", "probing"}
    mimicry = next(s for s in shifts if s.target == "sycophancy_mimicry")
    assert mimicry.reference == "quote_attribution"


def test_all_manifest_is_56_distinct_shifts_in_8_categories():
    shifts = load_manifest("all")
    assert len(shifts) == 56
    assert len({(s.source, s.target) for s in shifts}) == 56
    assert len({s.category for s in shifts}) == 8
    assert sum(s.label == "extreme" for s in shifts) == 37


def test_all_manifest_matches_reference_specs(genies_data):
    """The manifest is the reference's all.json without its 13 repeated entries."""
    raw = json.loads((genies_data / "distribution_shifts/all.json").read_text())
    assert len(raw) == 69
    distinct = list(dict.fromkeys((e["source"], e["target"], e.get("target_reference")) for e in raw))
    ours = [(s.source, s.target, s.target_reference) for s in load_manifest("all")]
    assert ours == distinct
    for label in ("extreme", "probing"):
        for path in (genies_data / "distribution_shifts" / label).glob("*.json"):
            if path.stem == "all":
                continue
            pairs = {(e["source"], e["target"]) for e in json.loads(path.read_text())}
            for s in load_manifest("all"):
                if (s.source, s.target) in pairs:
                    assert (s.label, s.category) == (label, path.stem)


def test_manifest_distributions_exist(genies_data):
    names = {p.name for p in (genies_data / "distributions").iterdir()}
    for s in load_manifest("all"):
        assert {s.source, s.target, s.reference} <= names


def test_shifts_ls_cli():
    result = CliRunner().invoke(genies, ["shifts", "ls", "--manifest", "genies"])
    assert result.exit_code == 0 and "15 shifts" in result.output and "unwanted_personas" in result.output
    result = CliRunner().invoke(genies, ["shifts", "ls", "--manifest", "all"])
    assert "56 shifts" in result.output


def test_bad_manifest_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"source": "a"}]))
    with pytest.raises(UserError, match="shift 0: needs at least 'source' and 'target'"):
        load_manifest(str(path))
    result = CliRunner().invoke(genies, ["shifts", "ls", "--manifest", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
