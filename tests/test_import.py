"""`genies data import`: preference, ranked and GENIES rows from JSONL, CSV, Parquet and saved datasets,
bad rows reported by row, then extracted with the tiny model and probed end to end."""

import json
import sys

import pytest
from click.testing import CliRunner

from cli import actstore, genies, probes

datasets = pytest.importorskip("datasets")

GOOD = [(f"Question {i}: what is {i} plus {i}?", f"It is {2 * i}.", f"It is {2 * i + 1}.") for i in range(8)]


def run(group, *args):
    return CliRunner().invoke(group, [str(a) for a in args])


def import_rows(source, data_dir, name, *extra):
    return run(genies, "data", "import", source, "--name", name, "--data-dir", data_dir, "--split-ratio", 0.5, *extra)


def rejected_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("rejected: ")]


def load(data_dir, name):
    directory = data_dir / "distributions" / name
    return [json.loads((directory / f"{split}.json").read_text()) for split in ("train", "test")]


def extract_and_fit(data_dir, name, tmp_path):
    """The imported distribution goes through extraction and a probe fit like any GENIES one."""
    root = tmp_path / "stores"
    extracted = run(actstore, "extract", "--model", "tiny-random", "--dataset", name, "--data-dir", data_dir,
                    "--out", root, "--no-progress", "--compute-dtype", "float32")
    assert extracted.exit_code == 0, extracted.output
    train = root / "tiny-random" / name / "train.plain.zarr"
    fitted = run(probes, "fit", "--method", "mms", "--layer", 1, "--train", train, "--json")
    assert fitted.exit_code == 0, fitted.output
    report = json.loads(fitted.stdout)
    assert [row["role"] for row in report["results"]] == ["train (in-sample)", "source test"]
    assert report["results"][1]["n_pairs"] == sum(len(e["responses"]) - 1 for e in load(data_dir, name)[1])
    return report


def test_jsonl_preference_file_with_bad_rows(tmp_path):
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in GOOD]
    rows.insert(2, {"prompt": "Same?", "chosen": "yes", "rejected": "yes"})
    rows.insert(5, {"prompt": "   ", "chosen": "a", "rejected": "b"})
    rows.append({"prompt": "No rejected.", "chosen": "a", "rejected": None})
    source = tmp_path / "prefs.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data_dir = tmp_path / "data"
    result = import_rows(source, data_dir, "prefs")
    assert result.exit_code == 0, result.output
    assert rejected_lines(result) == [f"rejected: {source}: line 3: 'chosen' and 'rejected' are the same text",
                                      f"rejected: {source}: line 6: empty 'prompt'",
                                      f"rejected: {source}: line 11: empty 'rejected'"]
    assert "4 train + 4 test examples (preference format); 3 row(s) rejected" in result.stdout
    train, test = load(data_dir, "prefs")
    imported = {e["prompt"]: e["responses"] for e in train + test}
    assert imported == {p: {c: 1.0, r: 0.0} for p, c, r in GOOD}
    extract_and_fit(data_dir, "prefs", tmp_path)


def test_csv_with_split_column_and_mapped_columns(tmp_path):
    import csv

    source = tmp_path / "prefs.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "good", "bad", "split"])
        for i, (p, c, r) in enumerate(GOOD):
            writer.writerow([p, c, r, "test" if i % 4 == 0 else "train"])
        writer.writerow(["A prompt", "", "b", "train"])
        writer.writerow(["Another prompt", "a", "b", "validation"])
        writer.writerow(["Texts stay texts: 2 + 5?", "007", "NA", "train"])
    data_dir = tmp_path / "data"
    result = import_rows(source, data_dir, "csvprefs", "--prompt-column", "question", "--chosen-column", "good",
                         "--rejected-column", "bad")
    assert result.exit_code == 0, result.output
    assert rejected_lines(result) == [f"rejected: {source}: line 10: empty 'good'",
                                      f"rejected: {source}: line 11: split 'validation' is neither train nor test"]
    train, test = load(data_dir, "csvprefs")
    assert [e["prompt"] for e in test] == [GOOD[0][0], GOOD[4][0]]  # the split column is kept, not the ratio
    assert len(train) == 7 and train[-1]["responses"] == {"007": 1.0, "NA": 0.0}  # not the number 7, not missing
    extract_and_fit(data_dir, "csvprefs", tmp_path)


def test_parquet_ranked_file_with_ties_rejected(tmp_path):
    rows = [{"prompt": p, "responses": [r, c, f"I do not know {i}."], "scores": [0.5, 2.0, -1.0]}
            for i, (p, c, r) in enumerate(GOOD)]
    rows.insert(3, {"prompt": "Tie", "responses": ["a", "b", "c"], "scores": [1.0, 1.0, 0.0]})
    rows.insert(6, {"prompt": "Short", "responses": ["a", "b"], "scores": [1.0]})
    source = tmp_path / "ranked.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(source))
    data_dir = tmp_path / "data"
    result = import_rows(source, data_dir, "ranked")
    assert result.exit_code == 0, result.output
    assert rejected_lines(result) == [
        f"rejected: {source}: row 3: 2 responses share the top score 1.0; the best must be one response",
        f"rejected: {source}: row 6: 2 responses but 1 scores"]
    train, test = load(data_dir, "ranked")
    assert len(train) + len(test) == 8
    for example in train + test:
        assert sorted(example["responses"].values()) == [0.0, 0.0, 1.0]
        assert example["responses"][next(c for p, c, _ in GOOD if p == example["prompt"])] == 1.0
    extract_and_fit(data_dir, "ranked", tmp_path)


def test_saved_dataset_dict_conversational_with_bad_rows(tmp_path):
    def conversation(prompt, answer):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]

    def rows(triples):
        return [{"chosen": conversation(p, c), "rejected": conversation(p, r)} for p, c, r in triples]

    train = rows(GOOD[:6]) + [{"chosen": conversation("Q", "a"), "rejected": conversation("Other Q", "b")}]
    test = rows(GOOD[6:]) + [{"chosen": [{"role": "user", "content": "Q"}], "rejected": [{"role": "user", "content": "Q"}]}]
    source = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                          "test": datasets.Dataset.from_list(test)}).save_to_disk(str(source))
    data_dir = tmp_path / "data"
    result = import_rows(source, data_dir, "chats")
    assert result.exit_code == 0, result.output
    assert rejected_lines(result) == [
        f"rejected: {source}[train]: row 6: 'chosen' and 'rejected' differ before their last assistant message",
        f"rejected: {source}[test]: row 2: 'chosen' does not end with an assistant message"]
    imported_train, imported_test = load(data_dir, "chats")
    assert [e["prompt"] for e in imported_train] == [p for p, _, _ in GOOD[:6]]  # the saved splits are kept
    assert imported_test == [{"prompt": p, "responses": {c: 1.0, r: 0.0}} for p, c, r in GOOD[6:]]
    extract_and_fit(data_dir, "chats", tmp_path)


def test_seeded_split_is_reproducible_and_atomic_rerun_is_refused(tmp_path):
    source = tmp_path / "prefs.jsonl"
    source.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in GOOD))
    data_dir = tmp_path / "data"
    assert import_rows(source, data_dir, "a", "--seed", 3).exit_code == 0
    assert import_rows(source, data_dir, "b", "--seed", 3).exit_code == 0
    assert load(data_dir, "a") == load(data_dir, "b")
    again = import_rows(source, data_dir, "a")
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.stderr
    assert import_rows(source, data_dir, "a", "--overwrite", "--seed", 4).exit_code == 0
    assert sorted(p.name for p in (data_dir / "distributions").iterdir()) == ["a", "b"]  # no staging left behind


@pytest.mark.parametrize("content, suffix, fragment", [
    (b"not parquet", ".parquet", "cannot be read as Parquet"),
    (b"{broken json\n", ".jsonl", "holds no rows (1 unreadable; the first: "),
    (b"prompt\tchosen\n", ".tsv", "unknown file type '.tsv'"),
])
def test_unreadable_file_is_one_line_naming_the_formats(tmp_path, content, suffix, fragment):
    source = tmp_path / f"data{suffix}"
    source.write_bytes(content)
    result = import_rows(source, tmp_path / "data", "x")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0]
    assert "JSON, JSONL, CSV or Parquet file, or a directory saved with datasets' save_to_disk" in lines[0]
    assert not (tmp_path / "data" / "distributions" / "x").exists()


def test_no_good_rows_exits_2_after_reporting_each(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}) + "\n"
                      + json.dumps({"prompt": "q", "chosen": "", "rejected": "b"}) + "\n")
    result = import_rows(source, tmp_path / "data", "bad")
    assert result.exit_code == 2
    assert len(rejected_lines(result)) == 2
    assert result.stderr.splitlines()[-1] == f"error: {source}: no row could be imported as preference data (2 rejected)"
    assert not (tmp_path / "data" / "distributions" / "bad").exists()


def test_unknown_columns_name_the_expected_ones(tmp_path):
    source = tmp_path / "odd.jsonl"
    source.write_text(json.dumps({"question": "p", "answer": "a"}) + "\n")
    result = import_rows(source, tmp_path / "data", "odd")
    assert result.exit_code == 2
    assert "cannot tell the format from its columns question, answer" in result.stderr
    assert "--prompt-column" in result.stderr


def test_explicit_format_without_its_columns_is_one_line(tmp_path):
    source = tmp_path / "ranked.jsonl"
    source.write_text(json.dumps({"question": "p", "responses": ["a", "b"], "scores": [1, 0]}) + "\n")
    result = import_rows(source, tmp_path / "data", "r", "--format", "ranked")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {source}: no column 'prompt' for ranked data (its columns: question, "
                                     "responses, scores); name the prompt column with --prompt-column")
    renamed = import_rows(source, tmp_path / "data", "r", "--format", "ranked", "--prompt-column", "question")
    assert renamed.exit_code == 2  # the column is found now, but one row leaves nothing to test on
    assert "no valid rows left for the test split (1 imported); a distribution needs both train and test" in renamed.stderr


def test_without_the_datasets_package_one_line_says_what_to_install(tmp_path, monkeypatch):
    source = tmp_path / "prefs.parquet"  # JSON, JSONL and CSV files are read without it
    source.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "datasets", None)  # what `import datasets` meets when not installed
    result = import_rows(source, tmp_path / "data", "p")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: genies data import needs the datasets package: "
                                     "pip install 'genies-toolkit[import]' (or: pip install datasets)")
