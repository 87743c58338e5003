from pathlib import Path

import pytest

from genies.paper import SHIPPED, derive_from_reference_csv, paper_figure, paper_rows, read_paper_results
from manifests import load_manifest

REFERENCE_CSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper-results.csv"
GENIES = [(s.source, s.target) for s in load_manifest("genies")]


def test_shipped_table_covers_every_shift_and_intervention():
    rows = read_paper_results()
    assert len(rows) == 56 * 9
    assert {(r.source, r.target) for r in rows} == {(s.source, s.target) for s in load_manifest("all")}
    assert all(r.zero_shot_accuracy is not None and r.target_tuned_capability for r in rows)


def test_shipped_table_rederives_from_the_reference_extract():
    if not REFERENCE_CSV.is_file():
        pytest.skip(f"{REFERENCE_CSV} not present")
    assert derive_from_reference_csv(REFERENCE_CSV) == read_paper_results(SHIPPED)


@pytest.mark.parametrize("source,target,method,accuracy", [
    # genies-reference.md §4.3 (llama-30b, GENIES)
    ("us_history_textbook", "us_history_fiction", "lora", 0.977),
    ("us_history_textbook", "us_history_fiction", "mms-heads", 0.964),
    ("alpaca_short", "alpaca_long", "mms-heads", 0.596),
    ("alpaca_mmlu", "sycophancy_mimicry", "lat-stim-1", 0.900),
    ("alpaca_mmlu", "wrong_arc", "lat-stim", 0.376),
    ("math", "change_my_view", "prompt-tuning", 0.644),
    ("alpaca_low_quality", "alpaca_high_quality", "cra-heads", 0.495),
])
def test_generalization_matches_published_table(source, target, method, accuracy):
    assert paper_figure(source, target, method).generalization_accuracy == pytest.approx(accuracy, abs=5e-4)


def test_baseline_ttc_and_de_match_published_tables():
    fiction = paper_figure("us_history_textbook", "us_history_fiction", "mms-heads")
    assert fiction.zero_shot_accuracy == pytest.approx(0.715, abs=5e-4)  # §4.4: published baseline, not 0.712
    assert (round(fiction.target_tuned_capability, 3), fiction.target_tuned_intervention) == (0.997, "lora_fine_tuning")
    assert fiction.differential_elicitation == pytest.approx(0.250, abs=5e-4)  # §4.5
    view = paper_figure("math", "change_my_view", "lora")
    assert (round(view.target_tuned_capability, 3), view.target_tuned_intervention) == (0.764, "prompt_tuning")
    assert view.differential_elicitation == pytest.approx(0.283, abs=5e-4)
    assert paper_figure("alpaca_mmlu", "truthful_qa", "zero-shot").differential_elicitation == 0.0
    assert paper_figure("alpaca_mmlu", "truthful_qa", "logreg") is None  # no paper counterpart
    # not the same method: residual-stream mms and cra (the paper's work on attention heads), PCA lat
    assert all(paper_figure("alpaca_mmlu", "truthful_qa", m) is None for m in ("mms", "cra", "lat"))


def test_genies_means_match_published_table():
    rows = paper_rows(GENIES)
    means = {i: sum(r.generalization_accuracy for r in rows if r.intervention == i) / 15
             for i in ("mms", "lat_stim_1", "lora_fine_tuning", "zero_shot")}
    assert means == pytest.approx({"mms": 0.620, "lat_stim_1": 0.577, "lora_fine_tuning": 0.561, "zero_shot": 0.486}, abs=5e-4)
