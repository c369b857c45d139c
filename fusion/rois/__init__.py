"""ROI generators: from a case's image and drawn ROI to a label map on the image grid.

A generator is any object with ``needs_roi`` and a ``__call__(image, roi) -> LabelMap``
(:class:`RoiGenerator`); built-ins register themselves in :data:`GENERATORS` by name,
so a study names them in YAML and the pipeline never imports one by hand. Generated
label maps keep the image's geometry, carry a name per label, and say in ``notes``
what a reader of the report must know (a ring clipped at the border, a ROI too small
to split).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import SimpleITK as sitk

from fusion.errors import ConfigError, did_you_mean


@dataclass(frozen=True, slots=True)
class LabelMap:
    """Integer labels on the case's image grid, the name of each label, and notes."""

    image: sitk.Image
    names: dict[int, str]
    notes: tuple[str, ...] = ()


class RoiGenerator(Protocol):
    """``needs_roi``: whether it derives its map from the drawn ROI (ring, habitat) or
    segments the image itself (unet, command; then ``roi`` may be None)."""

    needs_roi: bool

    def __call__(self, image: sitk.Image, roi: sitk.Image | None) -> LabelMap: ...


GENERATORS: dict[str, Callable[..., RoiGenerator]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a generator available to studies under ``name``."""

    def add(cls: type) -> type:
        GENERATORS[name] = cls
        return cls

    return add


def make_generator(name: str, **settings: Any) -> RoiGenerator:
    """The generator ``name`` with its settings; an unknown name lists the known ones."""
    if name not in GENERATORS:
        raise ConfigError(
            f"unknown ROI generator {name!r}; known: {', '.join(sorted(GENERATORS))}."
            f"{did_you_mean(name, GENERATORS)}"
        )
    try:
        return GENERATORS[name](**settings)
    except (TypeError, ValueError) as exc:  # unknown or invalid settings
        raise ConfigError(f"ROI generator {name!r}: {exc}") from None


def label_image(array: Any, reference: sitk.Image) -> sitk.Image:
    """A uint8 label image from a (z, y, x) array, with the reference's geometry."""
    image = sitk.GetImageFromArray(array.astype("uint8"))
    image.CopyInformation(reference)
    return image


from fusion.rois import command, habitat, lung, ring, unet  # noqa: E402, F401 - the built-ins
