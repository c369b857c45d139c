"""ROI generators: from a case's image and drawn ROI to a label map on the image grid.

A generator is any object with ``needs_roi`` and a ``__call__(image, roi) -> LabelMap``
(:class:`RoiGenerator`); built-ins register themselves in :data:`GENERATORS` by name,
so a study names them in YAML and the pipeline never imports one by hand. Generated
label maps keep the image's geometry, carry a name per label, and say in ``notes``
what a reader of the report must know (a ring clipped at the border, a ROI too small
to split).
"""

from fusion.rois import (  # noqa: F401 - built-ins
    command,
    controls,
    habitat,
    lung,
    perturb,
    ring,
    unet,
)
from fusion.rois.base import (
    GENERATORS,
    LabelMap,
    RoiGenerator,
    check_rois,
    label_image,
    make_generator,
    needs_drawn_roi,
    register,
)

__all__ = ["GENERATORS", "LabelMap", "RoiGenerator", "check_rois", "label_image",
           "make_generator", "needs_drawn_roi", "register"]  # fmt: skip
