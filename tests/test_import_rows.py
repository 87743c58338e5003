"""`genies data import` reads each row as it is: one odd row never changes the others, every bad row
is `rejected: FILE: line N: reason` and left out, a file that cannot be read is one line, and a
distribution is written whole, by one import at a time, never into the bundled demo data."""

import json

import pytest
from click.testing import CliRunner

from cli import genies

ROWS = [{"prompt": f"Name city {i}.", "chosen": f'"City" {i}', "rejected": f"Village {i}"} for i in range(6)]


def import_file(source, data_dir, name="cities", *extra):
    return CliRunner().invoke(genies, ["data", "import", str(source), "--name", name, "--data-dir", str(data_dir),
                                       "--split-ratio", "0.5", *map(str, extra)])


def rejected(result) -> list[str]:
    return [line.split(": ", 2)[2] for line in result.stderr.splitlines() if line.startswith("rejected: ")]


def one_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def imported(data_dir, name="cities") -> list[dict]:
    directory = data_dir / "distributions" / name
    return [e for split in ("train", "test") for e in json.loads((directory / f"{split}.json").read_text())]


def jsonl(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_odd_rows_are_rejected_by_line_and_the_others_kept_exactly(tmp_path):
    good = [json.dumps(row).encode() for row in ROWS]
    source = jsonl(tmp_path / "rows.jsonl", [
        good[0], good[1],
        b'{"prompt": 7, "chosen": "a", "rejected": "b"}',  # a number where the others have text
        b'{"prompt": "p", "chosen": "a", "rejected": "b"',  # malformed
        b'["not", "an", "object"]',
        b'{"prompt": "p", "chosen": "\\ud800", "rejected": "b"}',  # a lone surrogate
        b'{"prompt": "p", "chosen": "a", "chosen": "c", "rejected": "b"}',  # a key twice
        b'{"prompt": "p", "chosen": "caf\xe9", "rejected": "b"}',  # Latin-1, not UTF-8
        *good[2:],
    ])
    result = import_file(source, tmp_path / "data")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("rejected: ")]
    assert [line.split(": ")[2] for line in lines] == ["line 3", "line 4", "line 5", "line 6", "line 7", "line 8"]
    assert rejected(result) == ["line 3: 'prompt' must be text, got int",
                                "line 4: not valid JSON (column 47: Expecting ',' delimiter)",
                                "line 5: expected a JSON object, got list",
                                "line 6: field 'chosen' holds a lone surrogate (a \\ud800-style escape that is not text)",
                                "line 7: field 'chosen' appears more than once",
                                "line 8: not UTF-8 text (byte 0xe9)"]
    kept = {e["prompt"]: e["responses"] for e in imported(tmp_path / "data")}
    assert kept == {row["prompt"]: {row["chosen"]: 1.0, row["rejected"]: 0.0} for row in ROWS}  # quotes kept


def test_a_duplicate_response_key_is_rejected_as_validate_does(tmp_path):
    rows = [json.dumps({"prompt": f"q{i}", "responses": {"a": 1.0, "b": 0.0}}).encode() for i in range(4)]
    source = jsonl(tmp_path / "g.jsonl", [*rows, b'{"prompt": "q", "responses": {"a": 1.0, "a": 0.0, "b": 0.0}}'])
    result = import_file(source, tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert rejected(result) == ["line 5: response 'a' appears more than once in 'responses' (each response is one "
                                "key, with one score)"]


def test_csv_rows_ragged_with_a_bom_and_texts_that_look_like_other_types(tmp_path):
    source = tmp_path / "rows.csv"
    lines = ["prompt,chosen,rejected", *(f'{r["prompt"]},"""City"" {i}",{r["rejected"]}' for i, r in enumerate(ROWS)),
             "only,two", "Q,007,NA,extra"]
    source.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")  # as Excel saves it
    result = import_file(source, tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert rejected(result) == ["line 8: 2 cells, but the header names 3 columns",
                                "line 9: 4 cells, but the header names 3 columns"]
    assert {e["prompt"] for e in imported(tmp_path / "data")} == {r["prompt"] for r in ROWS}
    assert all('"City"' in next(iter(e["responses"])) for e in imported(tmp_path / "data"))


@pytest.mark.parametrize("name, content, fragment", [
    ("empty.csv", b"", "empty CSV (no header row naming the columns)"),
    ("latin.csv", b"prompt,chosen,rejected\nq,caf\xe9,b\n", "line 2: not UTF-8 text (byte 0xe9)"),
    ("cut.json", b'[{"prompt": "q", "chosen": "a", "rejected": "b"},\n {"prompt": "r", ', "line 2: not valid JSON"),
    ("bad.jsonl", b"{broken\n[also broken\n", "holds no rows (2 unreadable; the first:"),
])
def test_a_file_that_cannot_be_read_is_one_line_naming_where(tmp_path, name, content, fragment):
    source = tmp_path / name
    source.write_bytes(content)
    assert fragment in one_error(import_file(source, tmp_path / "data"))
    assert not (tmp_path / "data" / "distributions" / "cities").exists()


def test_one_import_of_a_name_at_a_time_and_never_into_the_demo_data(tmp_path, monkeypatch):
    source = jsonl(tmp_path / "rows.jsonl", [json.dumps(row).encode() for row in ROWS])
    data = tmp_path / "data"
    (data / "distributions" / ".cities.importing").mkdir(parents=True)  # another import holds the name
    assert "another import of 'cities' is running" in one_error(import_file(source, data))
    (data / "distributions" / ".cities.importing").rmdir()
    (data / "distributions" / ".import-scratch" / "left").mkdir(parents=True)  # a killed import's scratch
    assert import_file(source, data).exit_code == 0
    assert not (data / "distributions" / ".import-scratch").exists()
    listed = CliRunner().invoke(genies, ["data", "ls", "--data-dir", str(data)])
    assert listed.exit_code == 0 and "cities" in listed.output and ".import" not in listed.output
    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))
    from common import demo_data_dir

    assert "the bundled demo data" in one_error(import_file(source, demo_data_dir()))


def test_imports_never_go_into_the_shared_genies_directory_and_mix_with_it_by_search_path(tmp_path, monkeypatch):
    from conftest import example, write_distribution
    from distributions.data import list_distributions, load_split, resolve_data_dir

    shared = write_distribution(tmp_path / "shared", "alpaca_mmlu", [example()])
    monkeypatch.setenv("GENIES_DATA", str(shared))
    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))
    source = jsonl(tmp_path / "rows.jsonl", [json.dumps(row).encode() for row in ROWS])
    result = CliRunner().invoke(genies, ["data", "import", str(source), "--name", "cities", "--split-ratio", "0.5"])
    assert result.exit_code == 0, result.output
    assert not (shared / "distributions" / "cities").exists()  # the shared directory is left as it was
    assert (tmp_path / "home" / "data" / "distributions" / "cities" / "train.json").is_file()
    both = resolve_data_dir(None)
    assert list_distributions(both) == ["alpaca_mmlu", "cities"]  # one search path holds the two
    assert load_split(both, "cities", "train").examples
    twice = CliRunner().invoke(genies, ["data", "import", str(source), "--name", "alpaca_mmlu"])
    assert "exists in another data directory on the search path" in one_error(twice)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert "is a file, not a data directory" in one_error(import_file(source, a_file))
