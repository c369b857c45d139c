"""The stages of a study behind one Protocol (:class:`fusion.stages.base.Stage`), in one registry.

A stage is a module here with a class registered by :func:`register`; the order of the
import line at the bottom is the order a run follows (qc -> splits -> classifier ->
segmentation -> rois -> involvement -> radiomics -> deep -> models -> statistics ->
report). :mod:`fusion.pipeline` loops over :data:`STAGES` and knows nothing of their
insides: each stage says whether it applies to a study, which study sections enter its
key (and which of their fields are left out, with the reason next to the list), the
tables it reads and writes, and does its work in ``run(ctx)`` from the frozen
:class:`fusion.stages.context.RunContext`.

Adding a stage is one module with its class and one name on the import line below;
``tests/test_cache_keys.py`` then checks that its key follows every field it reads.
"""

from fusion.stages import (  # noqa: F401, I001 - registration, in the order of a run
    qc,
    splits,
    classifier,
    segmentation,
    rois,
    involvement,
    radiomics,
    deep,
    models,
    statistics,
    report,
)
from fusion.stages.base import STAGES, Stage, enforce_budget, register

__all__ = ["STAGES", "Stage", "enforce_budget", "register"]
