"""The ROI generator Protocol, the registry built-ins add themselves to, and the study
checks that need it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import SimpleITK as sitk

from fusion.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from fusion.config import Study


@dataclass(frozen=True, slots=True)
class LabelMap:
    """Integer labels on the case's image grid, the name of each label, and notes;
    ``image_op``: an intensity change (:mod:`fusion.io.intensity`) to apply to the image
    before this map's features are computed, or None."""

    image: sitk.Image
    names: dict[int, str]
    notes: tuple[str, ...] = ()
    image_op: dict[str, Any] | None = None


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


def make_generator(name: str, /, **settings: Any) -> RoiGenerator:
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


def check_rois(study: Study) -> None:
    """Build every generator the study names, so an unknown generator or setting is a
    :class:`ConfigError` naming ``rois.<name>`` before the first case, not at it."""
    for name, spec in study.rois.items():
        try:
            make_generator(spec.generator, **spec.settings)
        except ConfigError as exc:
            raise ConfigError(f"{study.source}: rois.{name}: {exc}") from None


def needs_drawn_roi(study: Study) -> bool:
    """Whether every case needs the manifest's ROI: deep crops are cut around it, ring
    and habitat ROIs are made from it, and radiomics without generated ROIs has nothing
    else. A study whose ROIs all come from a segmenter does not."""
    derived = any(getattr(GENERATORS[s.generator], "needs_roi", True)
                  for s in study.rois.values() if s.generator in GENERATORS)  # fmt: skip
    deep = study.deep is not None and study.deep.roi is None
    return deep or derived or (study.radiomics is not None and not study.rois)


def label_image(array: Any, reference: sitk.Image) -> sitk.Image:
    """A uint8 label image from a (z, y, x) array, with the reference's geometry."""
    image = sitk.GetImageFromArray(array.astype("uint8"))
    image.CopyInformation(reference)
    return image
