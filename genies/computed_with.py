"""What a run's stores and fits were actually computed with, read from each of them: run.json lists the
distinct values, so a later request (``--attention``, ``--train-layout``) that reused them relabels nothing."""

from __future__ import annotations

from genies.plan import Plan


def computed_with(plan: Plan, previous: dict) -> dict:
    """run.json's ``computed_with``: ``attention``, each attention implementation the run's stores were
    extracted with; ``live_training``, how each live fit was trained (DDP over N processes, or one process);
    sorted, each value once: those of the stores and fits this invocation planned, and those an earlier
    invocation of the run recorded (``previous``, its run.json)."""
    from actstore.store import find_store
    from finetune.checkpoint import read_record

    earlier = previous.get("computed_with") or {}
    attention, layouts = set(earlier.get("attention") or ()), set(earlier.get("live_training") or ())
    for step in plan.stores:
        store = find_store(step.url)
        if store is not None:
            attention.add(str((store.meta.get("config") or {}).get("attention", "not recorded")))
    for fit in plan.fits:
        if fit.live and fit.path.is_dir():
            processes = int(read_record(fit.path).get("result", {}).get("n_processes", 1))
            layouts.add(f"ddp over {processes} processes" if processes > 1 else "one process")
    return {"computed_with": {"attention": sorted(attention), "live_training": sorted(layouts)}}
