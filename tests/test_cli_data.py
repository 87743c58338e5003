import json
import shutil

from click.testing import CliRunner

from cli import genies
from conftest import example, write_distribution


def run(*args):
    return CliRunner().invoke(genies, list(args), catch_exceptions=False)


def test_validate_full_genies_data(genies_data):
    result = run("data", "validate", "--data-dir", str(genies_data))
    assert result.exit_code == 0, result.output
    assert "66 distributions valid" in result.output


def test_validate_damaged_copy_names_every_problem(genies_data, tmp_path):
    copy = tmp_path / "data"
    for name in ("alpaca_easy", "arc_easy", "code_easy"):
        shutil.copytree(genies_data / "distributions" / name, copy / "distributions" / name)
    (copy / "distributions/alpaca_easy/test.json").write_text("{not json")
    train = json.loads((copy / "distributions/arc_easy/train.json").read_text())
    train[3]["responses"] = {"first": 1.0, "second": 1.0, "third": 0.0}
    train[7]["responses"] = {}
    (copy / "distributions/arc_easy/train.json").write_text(json.dumps(train))
    result = CliRunner().invoke(genies, ["data", "validate", "--data-dir", str(copy)])
    assert result.exit_code == 2
    assert "alpaca_easy/test.json: not valid JSON" in result.output
    assert "arc_easy/train.json: example 3: exactly one response must score 1.0, found 2" in result.output
    assert "arc_easy/train.json: example 7: needs at least two responses, has 0" in result.output
    assert "Traceback" not in result.output
    assert "3 problem(s) in 2 of 3 distributions" in result.output


def test_ls_prints_counts(tmp_path):
    root = write_distribution(tmp_path, "toy", [example()] * 3, [example()] * 2)
    result = run("data", "ls", "--data-dir", str(root))
    assert result.exit_code == 0
    assert result.output.splitlines()[1].split() == ["toy", "3", "2", "3"]


def test_validate_unknown_name_is_one_line(tmp_path):
    root = write_distribution(tmp_path, "toy", [example()])
    result = CliRunner().invoke(genies, ["data", "validate", "nope", "--data-dir", str(root)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "unknown distribution(s) nope" in result.output


def test_missing_data_dir_says_how_to_get_data(tmp_path):
    result = CliRunner().invoke(genies, ["data", "ls", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 2 and "genies data download" in result.output


def test_download_offline_is_one_clear_line(tmp_path, monkeypatch):
    import distributions.download as dl

    monkeypatch.setattr(dl, "GENIES_TARBALL_URL", "http://127.0.0.1:9/genies-datasets.tar")
    monkeypatch.setattr(dl.download, "__defaults__", ("http://127.0.0.1:9/genies-datasets.tar", 2.0))
    result = CliRunner().invoke(genies, ["data", "download", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "cannot download" in result.output and "by hand" in result.output
    assert str(tmp_path / "distributions") in result.output


def test_download_unpacks_a_valid_archive(tmp_path, monkeypatch):
    import tarfile

    import distributions.download as dl

    source = write_distribution(tmp_path / "src", "toy", [example()])
    tarball = tmp_path / "genies-datasets.tar"
    with tarfile.open(tarball, "w") as archive:
        archive.add(source / "distributions", arcname="distributions")
    target = tmp_path / "data"
    count, digest = dl.download(target, url=tarball.as_uri())
    assert count == 1 and (target / "distributions/toy/train.json").is_file()
    assert digest in (target / dl.CHECKSUM_FILE).read_text()
