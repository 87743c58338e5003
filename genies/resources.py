"""`genies run --plan`: what the run's extraction needs, before anything loads (actstore plan for the stores the
run would extract). Reads the store root and the data; writes nothing."""

from __future__ import annotations

from actstore.engine.resource_plan import ExtractionPlan, PlanRequest, plan_extraction
from genies.evaluations import filesystem_checks
from genies.plan import RunConfig, build_plan, settings_digest
from genies.steps import store_settings
from manifests import load_manifest


def run_resource_plan(config: RunConfig) -> ExtractionPlan:
    """The extraction plan of the stores ``config``'s run has still to extract (all of the model's layers)."""
    plan = build_plan(config, load_manifest(config.shifts),
                      filesystem_checks(config.data_dir, store_settings(config), settings_digest(config)))
    views: dict[tuple[str, str], list[str]] = {}
    for step in plan.stores_to_extract:
        views.setdefault((step.dataset, step.split), []).append(step.view)
    request = PlanRequest(model=config.model, data_dir=config.data_dir, limit=config.limit,
                          compute_dtype=config.compute_dtype, max_memory=config.max_memory,
                          batch_tokens=config.batch_tokens)
    return plan_extraction(request, [(dataset, split, tuple(found)) for (dataset, split), found in views.items()])
