"""`actstore plan`: the weights, placement and store sizes it predicts against what loading and extraction do."""

import zarr
from accelerate.utils import convert_file_size_to_int
from click.testing import CliRunner

import cli
from actstore.engine.extraction import ExtractConfig, extract
from actstore.engine.resource_plan import (GIB, PlanRequest, meta_model, model_footprint, parameter_bytes,
                                           plan_extraction, store_bytes)
from actstore.models import ModelSpec, load_model
from actstore.models.shapes import config_of
from actstore.models.tiny import tiny_random_llama
from actstore.store.layout import PER_SEQUENCE

# Parameter counts the models' publishers give (the checkpoints' own totals).
PUBLISHED = {"llama-2-7b": 6_738_415_616, "llama-3-8b": 8_030_261_248, "llama-2-13b": 13_015_864_320,
             "llama-2-70b": 68_976_648_192}


def test_named_shapes_have_their_published_parameter_counts():
    for name, count in PUBLISHED.items():
        assert model_footprint(config_of(name), "bfloat16").parameters == count, name


def test_the_weights_planned_are_the_bytes_the_loaded_model_holds(bundled_model):
    for dtype in ("float32", "bfloat16"):
        loaded = load_model(ModelSpec("smollm2-135m", compute_dtype=dtype)).model
        held = sum(t.numel() * t.element_size() for t in {id(t): t for t in [*loaded.parameters(),
                                                                          *loaded.buffers()]}.values())
        assert sum(parameter_bytes(meta_model(loaded.config), dtype).values()) == held, dtype


def test_the_placement_planned_is_the_loaders(tmp_path):
    tiny = tiny_random_llama()
    tiny.model.save_pretrained(tmp_path / "model")
    tiny.tokenizer.save_pretrained(tmp_path / "model")
    for size in ("100KB", "500KB", "1MB"):
        spec = ModelSpec.requested(str(tmp_path / "model"), device_map="auto", max_memory=f"cpu={size}",
                                   offload_dir=str(tmp_path / "offload"))
        loaded = load_model(spec).model
        planned = model_footprint(tiny.model.config, "float32", "none", {"cpu": convert_file_size_to_int(size)})
        assert planned.placement == getattr(loaded, "hf_device_map", {"": "cpu"}), size  # all on one: no map
    assert set(planned.bytes_by_device) == {"cpu"}  # 1MB holds the whole tiny model


def test_store_sizes_are_the_arrays_an_extraction_writes(tmp_path):
    views = ("plain", "yes")
    results = extract(ExtractConfig(model="tiny-random", datasets=("arith_easy",), data_dir="demo", splits=("test",),
                                    views=views, limit=7, out=str(tmp_path), progress=False))
    plan = plan_extraction(PlanRequest(model="tiny-random", datasets=("arith_easy",), data_dir="demo",
                                       splits=("test",), views=views, limit=7))
    for result, planned in zip(sorted(results, key=lambda r: r.view), sorted(plan.stores, key=lambda s: s.view)):
        group = zarr.open_group(result.url.removeprefix("file://"), mode="r")
        numeric = sum(group[name].nbytes for name in ("residual", "final_norm", *PER_SEQUENCE,
                                                      *(["loglik"] if planned.view == "plain" else [])))
        stored_layers = group["residual"].shape[0]
        assert planned.n_sequences == group["residual"].shape[1]
        assert store_bytes(planned.n_sequences, stored_layers, group["residual"].shape[2], "float16",
                           loglik=planned.view == "plain") == numeric
        assert planned.bytes > numeric  # and the texts


def test_a_70b_on_one_80gb_gpu_does_not_fit_and_4bit_is_the_change_that_does():
    runner = CliRunner()
    result = runner.invoke(cli.actstore, ["plan", "--model", "llama-2-70b", "--max-memory", "0=80GiB",
                                          "--compute-dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "weights in bfloat16: 128.5 GiB" in result.output
    assert "does not fit" in result.output and "smallest change: --quantize 4bit" in result.output
    fixed = plan_extraction(PlanRequest(model="llama-2-70b", max_memory="0=80GiB", compute_dtype="bfloat16",
                                        quantize="4bit"))
    assert fixed.fits and fixed.model.bytes_by_device["0"] < 40 * GIB
    seven = plan_extraction(PlanRequest(model="llama-2-7b", max_memory="0=80GiB", compute_dtype="bfloat16"))
    assert seven.fits and set(seven.model.bytes_by_device) == {"0"}


def test_a_model_without_a_config_here_is_one_line():
    result = CliRunner().invoke(cli.actstore, ["plan", "--model", "no-such-model"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "no config can be read here" in result.output


def test_tokens_planned_are_the_ones_the_extractions_tree_computes(tmp_path, monkeypatch):
    import actstore.engine.prompt_reuse as prompt_reuse

    built, real_build = [], prompt_reuse.build_forest
    monkeypatch.setattr(prompt_reuse, "build_forest", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    views = ("plain", "yes", "no")
    extract(ExtractConfig(model="tiny-random", datasets=("arith_easy",), data_dir="demo", splits=("test",),
                          views=views, limit=9, block_size=8, out=str(tmp_path), progress=False))
    plan = plan_extraction(PlanRequest(model="tiny-random", datasets=("arith_easy",), data_dir="demo",
                                       splits=("test",), views=views, limit=9, block_size=8))
    [count] = plan.tokens
    assert count.tree == sum(forest.computed_tokens() for forest in built) and len(built) >= 2
    assert count.whole > 2 * count.tree  # three views of one response share its prompt and the response


def test_genies_run_plan_sizes_the_stores_the_run_would_extract_and_writes_nothing(tmp_path):
    from genies.plan import RunConfig
    from genies.resources import run_resource_plan
    from genies.runner import resolve_config

    config = resolve_config(RunConfig(model="tiny-random", shifts="demo", limit=6, store_root=str(tmp_path / "stores"),
                                      out=tmp_path / "run", methods=("zero-shot", "mms", "ccs")))
    plan = run_resource_plan(config)
    assert plan.fits and not (tmp_path / "run").exists() and not (tmp_path / "stores").exists()
    assert {s.view for s in plan.stores} == {"plain", "yes", "no"} and len(plan.tokens) > 3
    result = CliRunner().invoke(cli.genies, ["run", "--model", "tiny-random", "--shifts", "demo", "--limit", "6",
                                             "--store-root", str(tmp_path / "stores"), "--out", str(tmp_path / "run"),
                                             "--methods", "zero-shot,mms,ccs", "--plan"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("fits") and f"stores: {len(plan.stores)}, " in result.output
    assert not (tmp_path / "run").exists()
