import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The suite runs on the CPU wherever it runs (every command's default device, and the processes tests start);
# a test marked gpu runs on the machine's GPU instead, and is skipped where there is none.
os.environ["GENIES_DEVICE"] = "cpu"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "genies-data"


def pytest_configure(config):
    """Under several workers (pytest-xdist), the packaged model is converted into the model cache once, here,
    before they start: never two processes converting it at once."""
    if getattr(config, "workerinput", None) is None and config.getoption("numprocesses", default=None):
        from actstore.models import load_model

        load_model("smollm2-135m")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and the machine's two cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def device_of_the_test(request, monkeypatch):
    """``gpu`` tests: the GPU, or a clean skip; every other test: the CPU (GENIES_DEVICE=cpu)."""
    if request.node.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
        monkeypatch.delenv("GENIES_DEVICE", raising=False)


@pytest.fixture(scope="session")
def genies_data() -> Path:
    """The full GENIES data, or a clean skip when this checkout has none beside it."""
    data = Path(os.environ.get("GENIES_TEST_DATA", SHARED_DATA))
    if not (data / "distributions").is_dir():
        pytest.skip(f"full GENIES data not found at {data}")
    return data


@pytest.fixture(scope="session")
def tiny_model():
    from actstore.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def bundled_model():
    from actstore.models import load_model

    return load_model("smollm2-135m")


# Toy examples of uneven lengths (1 to 4 responses), shared by the extraction and evaluation tests.
TOY_EXAMPLES = [
    {"prompt": "Add 2 and 3.\n### Response:\n", "responses": {"5": 1.0, "6": 0.0, "It is twenty-three.": 0.0}},
    {"prompt": "Name a colour.\n### Response:\n", "responses": {"Blue, like the sky on a clear day.": 1.0, "Seven": 0.0}},
    {"prompt": "Q\n### Response:\n", "responses": {"A rather long answer that pads everything else.": 0.0, "B": 1.0}},
    {"prompt": "Spell cat backwards, please, letter by letter.\n### Response:\n", "responses": {"t-a-c": 1.0, "c-a-t": 0.0}},
    {"prompt": "Is ice cold?\n### Response:\n", "responses": {"No": 0.0, "Yes": 1.0, "Maybe": 0.0, "Sometimes": 0.0}},
]


def write_distribution(root: Path, name: str, train: list, test: list | None = None) -> Path:
    """Write a GENIES-format distribution under root/distributions/name and return root."""
    directory = root / "distributions" / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.json").write_text(json.dumps(train))
    (directory / "test.json").write_text(json.dumps(test if test is not None else train))
    return root


def example(prompt="Say hi.\n### Response:\n", responses=None):
    return {"prompt": prompt, "responses": responses or {"Hi!": 1.0, "No.": 0.0, "Bye": 0.0}}


def reseal(directory: Path, **record) -> None:
    """Re-write a saved directory's completion marker over its current files: a probe or reward
    model that is complete and consistent, but whose contents are wrong (what a buggy writer makes)."""
    from common.atomic import MARKER, file_sha256

    files = {p.relative_to(directory).as_posix(): file_sha256(p) for p in sorted(Path(directory).rglob("*"))
             if p.is_file() and p.name != MARKER}
    (Path(directory) / MARKER).write_text(json.dumps({"format": 1, "files": files, **record}))


def edit_store_attrs(url, **changes) -> None:
    """Change a store's attributes and re-seal them: a store made that way, not a damaged one."""
    import zarr

    from actstore.store import attrs_checksum

    group = zarr.open_group(str(url), mode="r+")
    group.attrs.update(changes)
    group.attrs["attrs_checksum"] = attrs_checksum(dict(group.attrs))


def write_vouched_results(run_dir: Path, rows, **info) -> Path:
    """RUN_DIR/results.csv from ``rows`` and a run.json (``info`` added) that vouches for it, as `genies run` leaves them."""
    from common.atomic import file_sha256
    from genies.results_csv import write_results
    from genies.run_info import RESULTS_CHECKSUM

    run_dir = Path(run_dir)
    path = write_results(run_dir / "results.csv", rows)
    record = run_dir / "run.json"
    existing = json.loads(record.read_text()) if record.is_file() else {}
    record.write_text(json.dumps({**existing, **info, RESULTS_CHECKSUM: file_sha256(path)}))
    return path
