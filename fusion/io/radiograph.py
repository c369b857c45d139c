"""Read a 2D radiograph (PNG, JPEG, DICOM DX/CR, a 2D NIfTI/NRRD) as display intensities.

A radiograph is shown to a radiologist through its display pipeline, and the classifier
should see what the radiologist sees: for DICOM, pydicom applies the modality LUT
(rescale slope/intercept), then the VOI LUT or the window the file names, and a
MONOCHROME1 image (white is low) is inverted so that bone is bright in every input.
The result is scaled to [0, 1] over its display range: the VOI output range for DICOM,
0..255 for an 8-bit PNG/JPEG, the image's own min..max otherwise. Pixel spacing (mm)
is kept when the file has it (PixelSpacing, else ImagerPixelSpacing).

Patient tags are never read into the result, so nothing but pixels and geometry can
leave this module. Every error names the file and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.errors import FusionError

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SITK_2D_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


@dataclass(frozen=True, slots=True)
class Radiograph:
    """Display intensities in [0, 1], (rows, columns), with what the file said of them."""

    pixels: np.ndarray  # float32, (rows, columns), 0 = black
    spacing_mm: tuple[float, float] | None  # (row, column) spacing
    bits: int  # bits per pixel as stored
    source: str  # 'dicom MONOCHROME1, window 2048/4096', 'png 8-bit', ...


def read_radiograph(path: Path) -> Radiograph:
    """Decode one 2D image; FusionError (naming the file) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FusionError(f"{path}: image file not found")
    name = path.name.lower()
    try:
        if name.endswith(PIL_SUFFIXES):
            return _read_pil(path)
        if name.endswith(SITK_2D_SUFFIXES):
            return _read_sitk(path)
        return _read_dicom(path)  # .dcm, or DICOM files without a suffix
    except FusionError:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder's own error, said for this file
        reason = f"{type(exc).__name__}: {exc}"
        raise FusionError(f"{path}: cannot decode the image ({reason})") from None


def _not_2d(path: Path, shape: tuple[int, ...]) -> FusionError:
    return FusionError(
        f"{path}: a 3D volume ({' x '.join(map(str, shape))}) was given where a 2D "
        "radiograph is expected; give one image per case (or use a CT study)"
    )


def _unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:  # a constant image: QC reports it; all zeros keeps the reader total
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def _read_pil(path: Path) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise FusionError(f"{path}: cannot decode the image: {exc}") from None
    if getattr(image, "n_frames", 1) > 1:
        raise _not_2d(path, (image.n_frames, image.height, image.width))
    mode = image.mode
    if mode in ("RGB", "RGBA", "P", "LA"):
        rgb = np.asarray(image.convert("RGB"))
        grey = rgb[..., 0]
        if not (np.array_equal(grey, rgb[..., 1]) and np.array_equal(grey, rgb[..., 2])):
            grey = np.asarray(image.convert("L"))  # ITU-R 601 luma of a colour image
        return Radiograph(_unit(grey, 0, 255), None, 8, f"{path.suffix[1:]} colour as grey")
    if mode in ("L", "1"):
        return Radiograph(_unit(np.asarray(image.convert("L")), 0, 255), None, 8,
                          f"{path.suffix[1:]} 8-bit")  # fmt: skip
    values = np.asarray(image).astype(np.float32)  # I;16, I, F
    lo, hi = float(values.min()), float(values.max())
    return Radiograph(_unit(values, lo, hi), None, 16 if mode.startswith("I;16") else 32,
                      f"{path.suffix[1:]} {mode}, scaled over its min..max")  # fmt: skip


def _read_sitk(path: Path) -> Radiograph:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    size = image.GetSize()
    if len(size) > 2 and any(s > 1 for s in size[2:]):
        raise _not_2d(path, tuple(reversed(size)))
    values = sitk.GetArrayFromImage(image).reshape(size[1], size[0]).astype(np.float32)
    lo, hi = float(values.min()), float(values.max())
    spacing = image.GetSpacing()
    bits = 8 * image.GetSizeOfPixelComponent()
    return Radiograph(_unit(values, lo, hi), (spacing[1], spacing[0]), bits,
                      f"{path.suffix[1:]} min..max")  # fmt: skip


def _read_dicom(path: Path) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise FusionError(
            f"{path}: not a readable DICOM file or a known image format ({exc}); "
            f"use DICOM or one of {', '.join(PIL_SUFFIXES + SITK_2D_SUFFIXES)}"
        ) from None
    if "PixelData" not in ds:
        raise FusionError(f"{path}: the DICOM file holds no pixel data")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise _not_2d(path, (frames, int(ds.Rows), int(ds.Columns)))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):
        raise FusionError(f"{path}: photometric interpretation {photometric!r}; a "
                          "radiograph should be MONOCHROME1 or MONOCHROME2")  # fmt: skip
    stored = ds.pixel_array
    values = apply_modality_lut(stored, ds)  # integers stay integers (a VOI LUT indexes)
    lo, hi, how = _voi_range(ds)
    if how != "none":
        values = apply_voi_lut(values, ds, prefer_lut=True)
    else:
        lo, hi = float(values.min()), float(values.max())
    pixels = _unit(values, lo, hi)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels  # MONOCHROME1: the minimum is displayed white
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return Radiograph(
        pixels.astype(np.float32),
        (float(spacing[0]), float(spacing[1])) if spacing else None,
        int(ds.BitsStored),
        f"dicom {ds.get('Modality', '?')} {photometric}, {how}",
    )


def _voi_range(ds) -> tuple[float, float, str]:  # noqa: ANN001 - a pydicom Dataset
    """The output range of the VOI transform pydicom applies, and which one it is: a VOI
    LUT's entries span 0..2^bits-1; a window's range is what pydicom maps values far
    below and far above the window to (it depends on bits stored, sign and rescale)."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds:
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        return 0.0, float(2 ** int(descriptor[2]) - 1), "VOI LUT"
    if "WindowCenter" in ds and "WindowWidth" in ds:
        lo, hi = apply_voi_lut(np.array([-1e12, 1e12]), ds, prefer_lut=True)
        centre, width = (ds[k].value[0] if ds[k].VM > 1 else ds[k].value
                         for k in ("WindowCenter", "WindowWidth"))  # fmt: skip
        return float(lo), float(hi), f"window {float(centre):g}/{float(width):g}"
    return 0.0, 0.0, "none"


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A 2D lesion mask (PNG or 2D NIfTI/NRRD; any non-zero pixel is lesion) on the
    image's pixel grid ``shape``; FusionError when it cannot be read or does not fit."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(PIL_SUFFIXES):
            from PIL import Image

            with Image.open(path) as image:
                if getattr(image, "n_frames", 1) > 1:
                    raise _not_2d(path, (image.n_frames, image.height, image.width))
                mask = np.asarray(image.convert("L")) > 0
        elif name.endswith(SITK_2D_SUFFIXES):
            import SimpleITK as sitk

            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            if array.ndim > 2 and array.shape[0] > 1:
                raise _not_2d(path, array.shape)
            mask = array.reshape(array.shape[-2:]) > 0
        else:
            raise FusionError(f"{path}: a 2D mask must be a PNG or a 2D NIfTI/NRRD file")
    except FusionError:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder's own error, said for this file
        raise FusionError(f"{path}: cannot decode the mask ({type(exc).__name__}: {exc})") from None
    if mask.shape != tuple(shape):
        raise FusionError(f"{path}: the mask is {mask.shape[0]} x {mask.shape[1]} pixels but "
                          f"its image is {shape[0]} x {shape[1]}")  # fmt: skip
    return mask
