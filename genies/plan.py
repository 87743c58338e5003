"""What `genies run` has to do: stores to extract, probes to fit, reward models to train,
evaluations to make, each with a "done" flag, so a repeated run does no model work.

The plan is worked out from the evaluations the result rows need (genies/generalization.py):
per shift and method, the method trained on the source's training set and tested on the
target and on the source; zero-shot on the target; every method trained and tested on the
target reference (TTC). A done evaluation needs nothing else; an evaluation still to do needs
its fit (or trained reward model) and its stores, which may themselves be done already.

Done means current, not only present: every store, fit and evaluation records the fingerprints
of the data files it was computed from, and a step whose recorded fingerprints differ from the
data files' fingerprints now is redone (a store extracted again, over the stale one), so an
edited train.json or test.json never leaves an old number in the results.

Building the plan is pure given the ``DoneChecks``, so it is tested without any model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import registry
from common import UserError, default_store_root
from actstore.engine.threads import THREADS_HELP
from actstore.models.compute_dtype import COMPUTE_DTYPE_HELP, ComputeDtype
from actstore.store.locations import store_url
from actstore.models.placement import Placement
from actstore.store.roots import checked_store_root
from common.settings import SEED_MAX, available_cpus, check_choices, setting
from actstore.engine.views import PromptFormat
from distributions.data import DATA_DIR_HELP
from genies.generalization import UNTRAINED, ZERO_SHOT
from genies.train_layout import TRAIN_LAYOUT_HELP, TrainLayout
from manifests import Shift
from registry import Kind

DEFAULT_METHODS = (ZERO_SHOT, "mms", "lat", "ccs", "cra", "logreg", "random")
# The target-tuned capability (what DE and El divide by): the best of these, trained and tested on each target
# reference, whatever --methods asks for; the default methods that measure a capability from the plain stores
# (ccs and cra would add the yes/no stores of every reference).
DEFAULT_TTC_METHODS = (ZERO_SHOT, "mms", "lat", "logreg")
TTC_HELP = ("Target-tuned capability: the best of these methods trained and tested on each target reference "
            "(planned whatever --methods asks for, so DE and El do not change with it). Default: "
            + ",".join(DEFAULT_TTC_METHODS) + ".")
EVAL_SPLIT, TRAIN_SPLIT = "test", "train"
# Names the layer rule (probes.sweep.LAYER_RULE), so fits whose layers an earlier rule chose are not reused.
BEST_LAYER_TAG = "layer-best-1se"
DEFAULT_TRAIN_REPLICATES = 8
CHANCE_DIRECTIONS = 32  # a chance baseline (random) is summarised over this many directions, whatever --train-replicates
TRAIN_REPLICATES_HELP = (
    "Refits of every method fitted from stores, each on the training examples drawn with replacement and with "
    "seeds of its own (validation split, layer choice, initialisations): every interval and paired comparison "
    "then holds the fit's own variability beside the test examples' and the shifts'. 0: intervals hold test "
    "examples and shifts only. Live methods: --live-replicates.")
LIVE_REPLICATES_HELP = (
    "Retrainings of each live reward model (lora, prompt-tuning), each on its training examples drawn with "
    "replacement and with seeds of its own, so that their intervals hold the training's own variability (each "
    "costs a full training). 0: their intervals hold test examples and shifts only, and their rows say so.")


LAYER_HELP = ("Probe layer: an integer is a layer number (0 = embeddings, N = the last block's output); a decimal "
              "strictly between 0 and 1 is a relative depth, layer = round(depth x N) for the model's N blocks "
              "(0.6: 60% of the way up; 1.0 and 0.0 are refused as ambiguous: write 1 or 0 for a layer); 'best': "
              "chosen per method on a validation split of the source's train data.")


def layer_choice(text: str) -> int | float | str:
    """``--layer``: an integer (a layer number), a decimal in (0, 1) (a relative depth), or a word (``best``) that
    RunConfig checks. A decimal that could be read either way (1.0, 0.0, 2.5) is refused in one line."""
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return text
    if not 0.0 < value < 1.0:
        raise UserError(f"--layer {text} is ambiguous: an integer is a layer number (e.g. 12) and a decimal strictly "
                        "between 0 and 1 a relative depth (e.g. 0.6)")
    return value


def depth_layer(depth: float, n_layers: int) -> int:
    """The layer at relative depth ``depth`` (in (0, 1)) of a model with ``n_layers`` blocks: the output of a
    block (1..n_layers), never the embeddings (layer 0), which are the same for every response at the last token."""
    return min(n_layers, max(1, int(round(depth * n_layers))))


def check_model_name(text: str | None) -> str | None:
    """``--model-name``: a short label (no path separators, at most 64 characters)."""
    if text is None:
        return None
    name = str(text).strip()
    if not name or len(name) > 64 or any(c in name for c in "/\\\n\t"):
        raise UserError(f"--model-name {text!r}: give a short label (at most 64 characters, no slashes)")
    return name


def writable_store_root(text: str) -> str:
    return checked_store_root(text, "--store-root", writing=True)


@dataclass(frozen=True)
class RunConfig(Placement):
    """`genies run`: each documented field is one of its options."""

    model: str = setting(help="Model alias (tiny-random, smollm2-135m, ...), hub id or local path.")
    shifts: str = setting("genies", "genies, all, demo, or a manifest JSON file.")
    methods: tuple[str, ...] = setting(DEFAULT_METHODS, registry.benchmark_methods_help(),
                                       parse=registry.expand_methods)
    layer: int | float | str = setting("best", LAYER_HELP, parse=layer_choice)
    ttc_methods: tuple[str, ...] = setting(DEFAULT_TTC_METHODS, TTC_HELP, parse=registry.expand_methods)
    model_name: str | None = setting(None, "Short model name for the run's reports, plots and comparisons (default: "
                                           "the alias, or a name derived from the model's config or file name).",
                                     parse=check_model_name)
    limit: int | None = setting(None, "First N examples of each split.")
    threads: int | None = setting(None, THREADS_HELP, at_least=1, at_most=available_cpus)
    data_dir: str | None = setting(None, DATA_DIR_HELP + " Default with --shifts demo: demo.")
    store_root: str | None = setting(None, "Where activation stores live (default: the per-user store directory).",
                                     parse=writable_store_root)
    out: Path = setting(Path("genies-run"), "Run directory (RUN_DIR).", required=True)
    mix_target: int = setting(0, "Add K target training examples to each source before fitting (sensitivity analysis).")
    seed: int = setting(0, "Seeds every sampled choice (validation splits, fits, bootstrap, few-shot shots).",
                         at_least=0, at_most=SEED_MAX)
    prompt_format: PromptFormat = setting("raw", "chat: prompts as a user turn in the model's chat template (stores, "
                                                 "fine-tuning, few-shot).")
    train_steps: int | None = setting(None, "lora / prompt-tuning: optimizer steps per training set (default: "
                                            "finetune's, about 3 epochs of the training set, at most 150).")
    train_max_tokens: int = setting(8192, "lora / prompt-tuning: most padded tokens per forward/backward pass (a "
                                          "step's pairs run in several passes, gradients summed); lower it when "
                                          "training runs out of memory.")
    compute_dtype: ComputeDtype = setting("auto", COMPUTE_DTYPE_HELP + " For extraction and the live methods. With auto, "
                                          "stores are reused whatever dtype made them (e.g. on a GPU); a named dtype "
                                          "reuses only stores computed in it.")
    train_layout: TrainLayout = setting("auto", TRAIN_LAYOUT_HELP)
    prompt_reuse: bool = setting(True, "Extraction runs each token prefix its sequences share once (the prefix "
                                       "tree, on every device); --no-prompt-reuse runs every sequence whole.",
                                 option="--prompt-reuse/--no-prompt-reuse")
    train_replicates: int = setting(DEFAULT_TRAIN_REPLICATES, TRAIN_REPLICATES_HELP, at_least=0, at_most=1000)
    live_replicates: int = setting(0, LIVE_REPLICATES_HELP, at_least=0, at_most=100)
    plan_only: bool = setting(False, "Print what the run's extraction needs (actstore plan: weights, placement, one "
                                     "pass's memory, the stores' sizes and tokens, whether it fits) and stop: "
                                     "nothing loads, nothing is written.", option="--plan")
    keep_degenerate: bool = setting(False, "The report counts degenerate fits in its means, differences and "
                                           "correlations (default: listed, left out).")
    batch_tokens: int | None = setting(None, "Extraction: padded tokens per forward pass (default: 4096 on a CPU, "
                                             "on a GPU a budget scaled to its free memory).")

    def __post_init__(self):
        check_choices(self)
        choices = registry.benchmark_methods()
        unknown = [m for m in self.methods if m not in choices]
        if unknown:
            raise UserError(f"unknown method(s) {', '.join(unknown)} (choose from {', '.join(choices)})")
        if not self.methods:
            raise UserError("--methods is empty")
        not_capabilities = [m for m in self.ttc_methods if m not in choices or not registry.get(m).counts_as_capability]
        if not_capabilities or not self.ttc_methods:
            raise UserError(f"--ttc-methods: {', '.join(not_capabilities) or 'empty'}: give methods that measure a "
                            "capability (not chance baselines), from " + ", ".join(
                                m for m in choices if registry.get(m).counts_as_capability))
        for option, value in (("--train-replicates", self.train_replicates), ("--live-replicates", self.live_replicates)):
            if value == 1:
                raise UserError(f"{option}: 0, or at least 2 (one refit cannot show how much a refit moves)")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise UserError(f"--batch-tokens must be at least 1, got {self.batch_tokens}")
        if isinstance(self.layer, str) and self.layer != "best":
            object.__setattr__(self, "layer", layer_choice(self.layer))
        if not (self.layer == "best" or (isinstance(self.layer, int) and not isinstance(self.layer, bool)
                                         and self.layer >= 0)
                or (isinstance(self.layer, float) and 0.0 < self.layer < 1.0)):
            raise UserError(f"--layer must be a layer number or 'best' (or a relative depth in (0, 1)), got {self.layer!r}")
        check_model_name(self.model_name)
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.train_steps is not None and self.train_steps < 1:
            raise UserError(f"--train-steps must be at least 1, got {self.train_steps}")
        if self.train_max_tokens < 1:
            raise UserError(f"--train-max-tokens must be at least 1, got {self.train_max_tokens}")
        if self.mix_target < 0:
            raise UserError(f"--mix-target must be 0 or more, got {self.mix_target}")
        if self.compute_dtype == "float16" and self.trains_live:
            raise UserError("--compute-dtype float16 is for extraction only: lora and prompt-tuning train in float32 "
                            "or bfloat16")
        self.model_spec()  # unknown placements fail before any work

    @property
    def model_fingerprint(self) -> str | None:
        """A local model's content (``actstore.models.model_fingerprint``): part of the run's identity."""
        from actstore.models import model_fingerprint

        return model_fingerprint(self.model)

    @property
    def trains_live(self) -> bool:
        """Whether a method trains through the run's model (lora, prompt tuning)."""
        return any(registry.get(m).kind is Kind.LIVE_TRAINED for m in self.methods)

    def model_spec(self):
        """The one model of the run, loaded once, in ``--compute-dtype`` (auto: what `actstore extract` picks by
        default, so stores made by either are the same extraction)."""
        from actstore.models import ModelSpec

        return ModelSpec.requested(self.model, compute_dtype=self.compute_dtype, device_map=self.device_map,
                                   max_memory=self.max_memory, offload_dir=self.offload_dir,
                                   attention=self.attention, trains=self.trains_live, tree_masks=self.prompt_reuse)

    @property
    def training_precision(self) -> str:
        """The live methods' training precision: that of the run's model (bf16 autocast over a bfloat16 base)."""
        return "fp32" if self.model_spec().compute_dtype == "float32" else "bf16"

    @property
    def resolved_store_root(self) -> str:
        return self.store_root or str(default_store_root())

    @property
    def store_site(self) -> str:
        """What the run's stores keep: per-head outputs too (``--site heads``) when a method reads the heads
        (mms-heads, cra-heads), so every method of the run reads one set of stores; else the residual stream."""
        heads = any(registry.get(m).heads for m in (*self.methods, *self.ttc_methods))
        return "heads" if heads else "residual"

    @property
    def layer_tag(self) -> str:
        if self.layer == "best":
            return BEST_LAYER_TAG
        return f"depth{self.layer:g}" if isinstance(self.layer, float) else f"layer{self.layer}"

    @property
    def label(self) -> str:
        """The run's short model name: ``--model-name``, else derived from the model (never a long path)."""
        from common.model_names import model_name

        return self.model_name or model_name(self.model)


@dataclass(frozen=True)
class TrainingSet:
    """What a method is fitted on: a dataset's train split, plus K examples of another's."""

    dataset: str
    mixed_with: str | None = None
    n_mixed: int = 0

    @property
    def name(self) -> str:
        return f"{self.dataset}+{self.n_mixed}x{self.mixed_with}" if self.mixed_with else self.dataset


def training_set_for(shift: Shift, mix_target: int) -> TrainingSet:
    return TrainingSet(shift.source, shift.target, mix_target) if mix_target else TrainingSet(shift.source)


@dataclass(frozen=True)
class StoreStep:
    dataset: str
    split: str
    view: str
    url: str
    done: bool
    stale: bool = False  # complete, but extracted from another version of the data file


@dataclass(frozen=True)
class FitStep:
    """A probe fitted from stores (probe methods) or a reward model trained live (lora, prompt-tuning)."""

    method: str
    training: TrainingSet
    path: Path
    done: bool
    data: dict = field(default_factory=dict, compare=False)  # fingerprints of the data files it is fitted on

    @property
    def live(self) -> bool:
        return registry.get(self.method).live


@dataclass(frozen=True)
class EvalStep:
    method: str
    training: TrainingSet | None  # None: untrained (zero-shot)
    tested_on: str
    path: Path
    done: bool
    data: dict = field(default_factory=dict, compare=False)  # fingerprints of the data files it depends on

    @property
    def trained_on(self) -> str:
        return self.training.name if self.training else UNTRAINED


DataFingerprints = dict[str, str]  # "dataset/split" -> fingerprint of that data file


@dataclass(frozen=True)
class DoneChecks:
    """How the planner learns what exists; the runner passes real checks, tests pass sets.

    ``recorded_data`` gives the data fingerprints a store (by URL) or a saved fit or evaluation
    (by path) was computed from (None: none recorded); ``data_fingerprint`` the fingerprint of a
    data file now (None: not known, e.g. in tests). A step is done when it exists and every
    fingerprint it depends on matches.
    """

    store_complete: Callable[[str], bool]
    path_exists: Callable[[Path], bool] = Path.exists
    recorded_data: Callable[[str | Path], DataFingerprints | None] = lambda where: {}
    data_fingerprint: Callable[[str, str], str | None] = lambda dataset, split: None
    run_settings: str | None = None  # ``settings_digest`` of the run: recorded with every fit and evaluation

    def data(self, *files: tuple[str, str]) -> DataFingerprints:
        """The current fingerprints of ``(dataset, split)`` files, as recorded with results."""
        found = {f"{dataset}/{split}": self.data_fingerprint(dataset, split) for dataset, split in files}
        return {key: value for key, value in found.items() if value is not None}

    def result_data(self, *files: tuple[str, str]) -> DataFingerprints:
        """What a fit or evaluation depends on: its data files, and the run settings that made it, so a
        file made under other settings (a RUN_DIR whose run.json is gone or edited) is never reused."""
        settings = {RUN_SETTINGS_KEY: self.run_settings} if self.run_settings else {}
        return {**self.data(*files), **settings}

    def current(self, where: str | Path, depends_on: DataFingerprints) -> bool:
        recorded = self.recorded_data(where)
        return recorded is not None and all(recorded.get(key) == value for key, value in depends_on.items())


@dataclass
class Plan:
    config: RunConfig
    shifts: list[Shift]
    stores: list[StoreStep] = field(default_factory=list)
    fits: list[FitStep] = field(default_factory=list)
    evaluations: list[EvalStep] = field(default_factory=list)

    @property
    def stores_to_extract(self) -> list[StoreStep]:
        return [s for s in self.stores if not s.done]

    @property
    def fits_to_run(self) -> list[FitStep]:
        return [f for f in self.fits if not f.done]

    @property
    def evaluations_to_run(self) -> list[EvalStep]:
        return [e for e in self.evaluations if not e.done]

    @property
    def needs_model(self) -> bool:
        """Whether executing the plan loads the language model at all."""
        return bool(self.stores_to_extract or any(f.live for f in self.fits_to_run)
                    or any(registry.get(e.method).live for e in self.evaluations_to_run))

    def summary_lines(self) -> list[str]:
        def count(what: str, steps: list, todo: list) -> str:
            return f"{what}: {len(todo)} to do, {len(steps) - len(todo)} reused"

        lines = [f"plan for {len(self.shifts)} shifts x {len(self.config.methods)} methods ({self.config.layer_tag}):",
                 "  " + count("stores", self.stores, self.stores_to_extract),
                 "  " + count("fits", self.fits, self.fits_to_run),
                 "  " + count("evaluations", self.evaluations, self.evaluations_to_run)]
        lines += [f"    extract {s.dataset}/{s.split} view {s.view}" for s in self.stores_to_extract]
        lines += [f"    {'train' if f.live else 'fit'} {f.method} on {f.training.name}" for f in self.fits_to_run]
        if not (self.stores_to_extract or self.fits_to_run or self.evaluations_to_run):
            lines.append("  everything is done already: reusing all stores, fits and evaluations (no model work)")
        return lines


def run_paths(out: Path):
    """Where a run keeps its fits and evaluations (inside RUN_DIR, so one run never reuses another's)."""
    out = Path(out)
    return out / "fits", out / "evaluations"


def needed_evaluations(shifts: Iterable[Shift], methods: Iterable[str], mix_target: int = 0,
                       ttc_methods: Iterable[str] = DEFAULT_TTC_METHODS) -> list[tuple[str, TrainingSet | None, str]]:
    """(method, training set or None, tested_on) for every evaluation the result rows need, deduplicated:
    each method's on the target and the source, and each TTC method's on the target reference."""
    methods = list(methods)
    wanted: dict[tuple[str, TrainingSet | None, str], None] = {}

    def add(method: str, training: TrainingSet | None, tested_on: str) -> None:
        wanted[(method, None if registry.get(method).kind is Kind.STORE_BASELINE else training, tested_on)] = None

    for shift in shifts:
        training = training_set_for(shift, mix_target)
        add(ZERO_SHOT, None, shift.target)
        for method in methods:
            add(method, training, shift.target)
            add(method, training, shift.source)
        reference = TrainingSet(shift.reference)
        for method in ttc_methods:
            add(method, reference, shift.reference)
    return list(wanted)


def build_plan(config: RunConfig, shifts: list[Shift], done: DoneChecks) -> Plan:
    fits_dir, evals_dir = run_paths(config.out)
    plan = Plan(config, shifts)
    stores: dict[tuple[str, str, str], StoreStep] = {}
    fits: dict[tuple[str, TrainingSet], FitStep] = {}

    def need_store(dataset: str, split: str, view: str) -> None:
        if (dataset, split, view) not in stores:
            url = store_url(config.resolved_store_root, config.model, dataset, split, view, site=config.store_site,
                            prompt_format=config.prompt_format)
            complete = done.store_complete(url)
            current = complete and done.current(url, done.data((dataset, split)))
            stores[(dataset, split, view)] = StoreStep(dataset, split, view, url, current, stale=complete and not current)

    def need_fit(method: str, training: TrainingSet) -> None:
        if (method, training) in fits:
            return
        path = fits_dir / method / layer_tag(config, method) / training.name
        depends_on = done.result_data(*training_files(training))
        finished = done.path_exists(path) and done.current(path, depends_on)
        fits[(method, training)] = step = FitStep(method, training, path, finished, depends_on)
        if not step.done and not step.live:
            for view in registry.get(method).views:
                need_store(training.dataset, TRAIN_SPLIT, view)
                if training.mixed_with:
                    need_store(training.mixed_with, TRAIN_SPLIT, view)

    for method, training, tested_on in needed_evaluations(shifts, config.methods, config.mix_target, config.ttc_methods):
        path = evals_dir / method / layer_tag(config, method) / (training.name if training else "untrained") / f"{tested_on}.json"
        depends_on = done.result_data(*evaluation_files(training, tested_on))
        step = EvalStep(method, training, tested_on, path, done.path_exists(path) and done.current(path, depends_on),
                        depends_on)
        plan.evaluations.append(step)
        if step.done:
            continue
        spec = registry.get(method)
        for view in spec.views:
            need_store(tested_on, EVAL_SPLIT, view)
        if spec.kind in (Kind.PROBE, Kind.LIVE_TRAINED):
            need_fit(method, training)
    plan.stores = list(stores.values())
    plan.fits = list(fits.values())
    return plan


def training_files(training: TrainingSet) -> list[tuple[str, str]]:
    """The data files a fit on ``training`` reads."""
    return [(training.dataset, TRAIN_SPLIT)] + ([(training.mixed_with, TRAIN_SPLIT)] if training.mixed_with else [])


def evaluation_files(training: TrainingSet | None, tested_on: str) -> list[tuple[str, str]]:
    """The data files an evaluation depends on: its fit's, and the test split it scores."""
    return [*(training_files(training) if training else []), (tested_on, EVAL_SPLIT)]


def layer_tag(config: RunConfig, method: str) -> str:
    """Probe fits and evaluations depend on the layer choice; zero-shot and live methods do not.
    Under ``--layer best`` a chance baseline takes the middle layer (see probes.sweep.best_layers)."""
    spec = registry.get(method)
    if not spec.takes_layer:
        return ""
    if config.layer == "best" and spec.chance_baseline:
        return "layer-middle"
    return config.layer_tag


RESULT_SETTINGS = ("model", "model_fingerprint", "limit", "seed", "data_dir", "prompt_format", "compute_dtype",
                   "train_steps", "layer", "mix_target", "train_replicates",
                   "live_replicates")
# Settings a RUN_DIR made before they existed was made with: such a run is refused a different value too.
SETTINGS_ADDED_LATER = {"prompt_format": "raw", "compute_dtype": "auto", "train_steps": None, "model_fingerprint": None,
                         "train_replicates": 0, "live_replicates": 0}


RUN_SETTINGS_KEY = "run_settings"


def settings_digest(config: RunConfig) -> str:
    """The settings that change a fit's or an evaluation's numbers, as one digest (the data directory
    is left out: the data files' own fingerprints are recorded beside it)."""
    import hashlib
    import json

    settings = {name: getattr(config, name) for name in RESULT_SETTINGS if name != "data_dir"}
    return "sha256:" + hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:32]


def check_reusable(recorded: dict, config: RunConfig) -> None:
    """Refuse to mix into RUN_DIR results made with other settings (stale fits and evaluations)."""
    if not recorded:
        return
    found = {name: recorded.get(name, SETTINGS_ADDED_LATER.get(name)) for name in RESULT_SETTINGS
             if name in recorded or name in SETTINGS_ADDED_LATER}
    differing = [name for name, value in found.items() if value != getattr(config, name)]
    if differing:
        what = ", ".join(f"{n} {found[n]!r} (now {getattr(config, n)!r})" for n in differing)
        raise UserError(f"{config.out}: made with different settings: {what}; use another --out")
