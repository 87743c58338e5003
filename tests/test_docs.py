"""The documentation site: `mkdocs build --strict` succeeds, and every code block of every page runs as written.

Each page's blocks run in order in one working directory, with a per-user directory of their own
($GENIES_HOME), as a reader following the page would: ```python blocks share one namespace per
page (like a notebook), ```bash blocks are command lines of our programs (through click's
CliRunner, in this process) or of the launchers torchrun / accelerate (as processes), ```text
blocks are outputs and are never run. A block that cannot run on a test machine is marked on its
page by `<!-- shown, not run: REASON -->` on the line above, and must be listed in SHOWN_NOT_RUN.
"""

from __future__ import annotations

import linecache
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from conftest import REPO

DOCS = REPO / "docs"
PAGES = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
OUR_PROGRAMS = ("actstore", "probes", "finetune", "genies")
LAUNCHERS = ("torchrun", "accelerate", "srun")  # srun: shown only (a Slurm cluster)
SHOWN_NOT_RUN_MARKER = re.compile(r"^<!-- shown, not run: (.+) -->$")

# Every block a test machine cannot run, by (page, first line): each needs what the suite has not.
SHOWN_NOT_RUN = {
    ("getting-started.md", "genies data download"): "downloads the GENIES tarball from the network",
    ("reliability.md", "actstore extract --model smollm2-135m --dataset arith_easy --data-dir demo --out "
                       "s3://my-bucket/genies-stores"): "an S3 bucket, its credentials and the network",
    ("cross-model.md", "genies run --model smollm2-135m --shifts docs/cross-model-shifts.json --limit 40 \\"):
        "the full GENIES data and about 30 minutes of two real models (the benchmark page runs the same "
        "commands on the demo data)",
    ("example-genies-limit100/report.md", "genies run --model smollm2-135m --shifts genies --limit 100 \\"):
        "the command the example run was made with: 42 minutes on the full GENIES data",
    ("example-genies-paper-limit30/report.md", "genies run --model smollm2-135m --shifts genies --methods all --limit 30 \\"):
        "the command this run was made with: 45 minutes on the full GENIES data",
    ("several-processes.md", "torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr node-a --master_port "
                             "29500 \\"): "two machines with GPUs and a shared file system",
    ("own-code.md", "from transformer_lens import HookedTransformer"):
        "TransformerLens is not a dependency, and its HookedTransformer loads weights from the hub",
    ("several-processes.md", "srun --nodes 4 --ntasks-per-node 1 torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend "
                             'c10d --rdzv_id "$SLURM_JOB_ID" \\'): "a Slurm cluster",
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, counted from 1
    language: str
    code: str
    shown_not_run: str | None  # the reason given on the page, when marked

    @property
    def first_line(self) -> str:
        return self.code.splitlines()[0] if self.code else ""


def page_blocks(page: str) -> list[Block]:
    lines = (DOCS / page).read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[index])
        if not opening:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
        assert end is not None, f"{page}:{index + 1}: a code block that is never closed"
        marker = SHOWN_NOT_RUN_MARKER.match(lines[index - 1]) if index else None
        blocks.append(Block(page, index + 1, opening.group(1), "\n".join(lines[index + 1:end]) + "\n",
                            marker.group(1) if marker else None))
        index = end + 1
    return blocks


def command_lines(block: Block) -> list[list[str]]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = block.code.replace("\\\n", " ")
    return [words for words in (shlex.split(line, comments=True) for line in joined.splitlines()) if words]


def is_command(line: str) -> bool:
    return line.split(" ", 1)[0] in OUR_PROGRAMS + LAUNCHERS


# ----------------------------------------------------------------------------- the site builds
def test_the_site_builds_with_strict_and_holds_every_page_the_plots_and_the_api_reference(tmp_path):
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout + built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    for page in PAGES:
        assert (site / page.replace(".md", ".html")).is_file(), page
    benchmark_page = (site / "benchmark.html").read_text()
    for plot in ("example-genies-limit100/generalization_vs_zero_shot.png", "example-genies-limit100/methods.png"):
        assert f'src="{plot}"' in benchmark_page and (site / plot).stat().st_size > 0, plot
    # mkdocstrings rendered the docstrings (a `::: module` left as text would still build)
    assert 'id="actstore.store.open_store"' in (site / "api" / "actstore.html").read_text()
    assert 'id="probes.estimator.StoreProbe.fit"' in (site / "api" / "probes.html").read_text()
    assert not any(":::" in (site / "api" / name).read_text() for name in os.listdir(site / "api"))
    # search from the file system (site/index.html opened as a file): the offline plugin's index as a script
    assert (site / "search" / "search_index.js").stat().st_size > 1000


INTERNAL = re.compile(r"issue #?\d+|DESIGN §")  # the project's own tracker and design notes
DEVELOPMENT_ROOTS = ("work", "tmp")  # scratch roots of the machines the examples were run on
DEVELOPMENT_PATH = re.compile(r"(?<![\w.~$-])/(?:%s)/" % "|".join(DEVELOPMENT_ROOTS))
MARKDOWN_FILE = re.compile(r"[\w./-]+\.md\b")


def test_the_pages_and_example_runs_speak_of_the_product_only():
    """No issue numbers, design notes, development paths or Markdown files that are not in the repository, in the
    pages and in the example runs' reports and run.json (their commands show portable paths: $GENIES_DATA,
    runs/...)."""
    in_repository = {path.name for path in REPO.rglob("*.md") if ".venv" not in path.parts}
    found = []
    for path in sorted([*DOCS.rglob("*.md"), *DOCS.rglob("run.json")]):
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(DOCS)}: {m.group(0)}" for pattern in (INTERNAL, DEVELOPMENT_PATH)
                  for m in pattern.finditer(text)]
        found += [f"{path.relative_to(DOCS)}: {m.group(0)} (not in the repository)"
                  for m in MARKDOWN_FILE.finditer(text) if Path(m.group(0)).name not in in_repository]
    assert found == []


def test_every_page_is_in_the_navigation_and_linked_from_the_readme():
    import yaml

    def nav_pages(entries) -> list[str]:
        found = []
        for entry in entries:
            for value in (entry.values() if isinstance(entry, dict) else [entry]):
                found += nav_pages(value) if isinstance(value, list) else [value]
        return found

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert sorted(nav_pages(config["nav"])) == PAGES
    readme = (REPO / "README.md").read_text()
    assert [page for page in PAGES if f"](docs/{page})" not in readme] == []
    assert len(readme.splitlines()) <= 150


# ----------------------------------------------------------------------------- what the pages' blocks are
def test_blocks_that_are_not_run_are_exactly_the_listed_ones():
    marked = {(b.page, b.first_line): b for page in PAGES for b in page_blocks(page) if b.shown_not_run}
    assert sorted(marked) == sorted(SHOWN_NOT_RUN)
    assert all(block.language in ("bash", "python") for block in marked.values())  # what a reader would run


def test_every_block_is_python_bash_or_text_and_text_blocks_hold_no_commands():
    blocks = [block for page in PAGES for block in page_blocks(page)]
    assert [f"{b.page}:{b.line}" for b in blocks if b.language not in ("python", "bash", "text")] == []
    # a command belongs in a bash block, where it runs; a text block is output (or make targets)
    assert [f"{b.page}:{b.line}" for b in blocks if b.language == "text"
            and any(is_command(line.strip()) for line in b.code.splitlines())] == []
    for block in blocks:
        if block.language == "bash":
            assert all(words[0] in OUR_PROGRAMS + LAUNCHERS for words in command_lines(block)), block


# ----------------------------------------------------------------------------- every page runs
def run_command(words: list[str], where: Path) -> str:
    program, *args = words
    if program in LAUNCHERS:  # processes of their own, started as a shell would (the venv's launchers)
        # CPU processes, as the page says: on a machine with fewer GPUs than processes, cuda:LOCAL_RANK would not exist
        environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run([str(Path(sys.executable).parent / program), *args], cwd=where, capture_output=True,
                              text=True, timeout=600, env=environment)
        assert done.returncode == 0, (words, done.stdout[-3000:], done.stderr[-3000:])
        return done.stdout
    result = CliRunner().invoke(getattr(cli, program), args)
    assert result.exit_code == 0, (words, result.output, result.exception)
    return result.output


def run_page(page: str, where: Path) -> dict:
    namespace: dict = {}
    for block in page_blocks(page):
        if block.shown_not_run or block.language == "text":
            continue
        if block.language == "python":
            where = f"docs/{page}:{block.line}"
            # as a notebook cell's: libraries that read their caller's source (nnsight's traces) find it
            linecache.cache[where] = (len(block.code), None, block.code.splitlines(keepends=True), where)
            exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 - our own docs
        else:
            for words in command_lines(block):
                run_command(words, where)
    return namespace


def check_getting_started(where: Path, namespace: dict) -> None:
    import pandas

    assert set(pandas.read_csv(where / "sweep" / "sweep.csv")["method"]) == {"mms", "lat", "ccs", "cra", "logreg"}


def check_extraction(where: Path, namespace: dict) -> None:  # the notebook walkthrough
    assert namespace["heads"].head_activations(11).shape == (60, 9, 64)  # SmolLM2-135M: 9 heads of 64
    assert namespace["acts"].dims == ("sequence", "layer", "hidden")
    assert namespace["gap"].shape == (576,)
    assert (namespace["work"] / "sweep.png").stat().st_size > 0
    assert {row.method for row in namespace["sweep"].rows} == {"mms", "lat"}


def check_probes(where: Path, namespace: dict) -> None:  # the estimator example
    table, sweep = namespace["table"], namespace["sweep"]
    assert set(table["method"]) == {"lat", "ccs", "logreg"} and set(table["role"]) == {"validation", "target"}
    # methods x layers (tiny-random's 4 blocks; the embeddings at layer 0 are constant, left out) x (validation, target)
    assert len(table) == 3 * 4 * 2 and 0 not in set(table["layer"])
    assert {best.method for best in sweep.best} == {"lat", "ccs", "logreg"}
    assert namespace["ccs"].get_params()["seed"] == 1 and namespace["ccs"].trained_on_["dataset"] == "arith_easy"
    assert (where / "lat-probe" / "probe.json").is_file() and (where / "sweep" / "sweep.png").is_file()


def check_own_code(where: Path, namespace: dict) -> None:  # arrays, scikit-learn, a store written from nnsight
    assert len(namespace["folds"]) == 5 and 0.0 <= namespace["accuracy"] <= 1.0
    assert namespace["search"].best_params_["C"] in (0.01, 0.1, 1.0)
    assert namespace["X_contrast"].shape[1] == 2 * namespace["X"].shape[1]
    assert namespace["mine"].meta["imported_from"] == "nnsight" and namespace["mine"].verify() == []
    scores = namespace["from_ours"].decision_function(namespace["test"])
    gap = np.abs(namespace["from_nnsight"].decision_function(namespace["test"]) - scores).max()
    assert gap <= 1e-4 * np.abs(scores).max()


def check_finetune(where: Path, namespace: dict) -> None:
    assert (where / "lora-arith" / "finetune.json").is_file()


def check_benchmark(where: Path, namespace: dict) -> None:
    for run in ("smollm2", "tiny"):
        assert {"results.csv", "report.md", "run.json", "methods.png"} <= set(os.listdir(where / "runs" / run)), run
    assert set(namespace["results"]["method"]) == {"zero-shot", "mms", "lat", "logreg", "random"}


def check_own_data(where: Path, namespace: dict) -> None:
    from common import default_store_root

    assert (where / "mine" / "distributions" / "my_prefs" / "train.json").is_file()
    assert (default_store_root() / "smollm2-135m" / "my_prefs" / "train.chat.plain.zarr").is_dir()
    assert (where / "runs" / "mine" / "results.csv").is_file()


def check_several_processes(where: Path, namespace: dict) -> None:
    from actstore import open_store
    from common import default_store_root

    for dataset in ("arith_easy", "arith_hard"):
        store = open_store(str(default_store_root() / "tiny-random" / dataset / "train.plain.zarr"))
        assert store.meta["complete"] and store.meta["n_sequences"] == 60, dataset
    import json

    import pandas

    for run in ("two", "two-accelerate"):  # genies run in two processes, through torchrun and through accelerate
        assert json.loads((where / "runs" / run / "run.json").read_text())["processes"] == 2, run
        assert set(pandas.read_csv(where / "runs" / run / "results.csv")["method"]) == {"zero-shot", "mms", "lora"}, run
    layouts = [json.loads((where / "runs" / run / "run.json").read_text())["train_layout"] for run in ("two", "two-accelerate")]
    # lora trains on the two sources (the target-tuned capability comes from the plain-store methods by default)
    assert layouts == [{"layout": "auto", "per_process": 2, "ddp": 0}, {"layout": "ddp", "per_process": 0, "ddp": 2}]


def check_large_models(where: Path, namespace: dict) -> None:
    from actstore import open_store

    for root in ("offloaded", "quantized"):
        assert open_store(str(where / root / "smollm2-135m/arith_easy/test.plain.zarr")).meta["complete"], root


def check_reliability(where: Path, namespace: dict) -> None:
    from actstore import open_store
    from common import default_store_root

    assert open_store(str(default_store_root() / "tiny-random/arith_easy/train.plain.zarr")).meta["complete"]
    assert namespace["train_url"].startswith("memory://stores/tiny-random/arith_easy/train")


CHECKS = {"getting-started.md": check_getting_started, "extraction.md": check_extraction, "probes.md": check_probes,
          "own-code.md": check_own_code,
          "finetune.md": check_finetune, "benchmark.md": check_benchmark, "own-data.md": check_own_data,
          "several-processes.md": check_several_processes, "large-models.md": check_large_models,
          "reliability.md": check_reliability}


def uses_the_bundled_model(page: str) -> bool:
    return any("smollm2-135m" in block.code for block in page_blocks(page)
               if block.language in ("python", "bash") and not block.shown_not_run)


def runnable(page: str) -> bool:
    return any(block.language in ("python", "bash") and not block.shown_not_run for block in page_blocks(page))


# The heaviest pages run from tests/test_docs_heavy_pages.py: a file of their own, so that the suite's parallel
# workers (one test file each at a time) share the pages.
HEAVY_PAGES = ("benchmark.md", "several-processes.md")


def page_params(pages) -> list:
    return [pytest.param(page, marks=[pytest.mark.bundled] * uses_the_bundled_model(page)) for page in pages]


@pytest.mark.parametrize("page", page_params(p for p in PAGES if runnable(p) and p not in HEAVY_PAGES))
def test_the_pages_code_runs_as_written(page, tmp_path, monkeypatch, request):
    run_page_as_written(page, tmp_path, monkeypatch, request)


def run_page_as_written(page, tmp_path, monkeypatch, request) -> None:
    """Run ``page``'s blocks in a fresh directory and home (the model cache shared), then its checks."""
    from common import default_model_cache

    if uses_the_bundled_model(page):
        request.getfixturevalue("bundled_model")  # converted once into the model cache, shared below
    models = default_model_cache()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "models").symlink_to(models, target_is_directory=True)
    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENIES_DATA", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace = run_page(page, tmp_path)
    if page in CHECKS:
        CHECKS[page](tmp_path, namespace)


def test_every_page_that_runs_has_its_results_checked():
    assert sorted(page for page in PAGES if runnable(page)) == sorted(CHECKS)
