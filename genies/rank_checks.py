"""Every process of a launch works from what rank 0 planned: the same request, the same data files and the
same model. Each process checks its own against the plan before any work, and stops the launch in one line
naming its rank and what differs (a copy of the data with other labels on one node, another --limit)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from common import UserError
from common.settings import option_name
from genies.plan import Plan


@dataclass(frozen=True)
class PlannedInputs:
    """What rank 0 planned with: its request as given, each data file's fingerprint, the model's."""

    request: object  # the RunConfig rank 0 was given (before defaults were resolved)
    data: dict[str, str]  # "dataset/split" -> fingerprint
    model_fingerprint: str | None

    @classmethod
    def of(cls, request, plan: Plan) -> "PlannedInputs":
        data = {key: value for step in (*plan.fits, *plan.evaluations) for key, value in step.data.items()
                if "/" in key}
        return cls(request, data, plan.config.model_fingerprint)


def check_same_request(mine, planned) -> None:
    """The options this process was given are rank 0's; a UserError names the first that differs."""
    for field in dataclasses.fields(mine):
        if getattr(mine, field.name) != getattr(planned, field.name):
            raise UserError(f"{option_name(field)} {getattr(mine, field.name)} here, but rank 0 was given "
                            f"{getattr(planned, field.name)}: give every process the same command")


def check_same_inputs(plan: Plan, planned: PlannedInputs) -> None:
    """The data files and the model this process reads are the ones rank 0 planned with."""
    from actstore.models import model_fingerprint
    from distributions.data import split_path
    from genies.evaluations import DataFiles

    files = DataFiles(plan.config.data_dir)
    for key, fingerprint in sorted(planned.data.items()):
        dataset, split = key.split("/", 1)
        mine = files.fingerprint(dataset, split)
        if mine != fingerprint:
            where = split_path(files.data_dir, dataset, split)
            what = f"fingerprint {mine[:19]}... here, {fingerprint[:19]}... in rank 0" if mine else "missing here"
            raise UserError(f"{where}: not the data file rank 0 planned with ({what}); give every process the same "
                            "data (--data-dir, GENIES_DATA)")
    mine = model_fingerprint(plan.config.model)
    if mine != planned.model_fingerprint:
        raise UserError(f"{plan.config.model}: not the model rank 0 planned with (fingerprint {mine} here, "
                        f"{planned.model_fingerprint} in rank 0); give every process the same model")
