"""DICOM series whose files do not form a regular grid, made here with pydicom: a missing
slice, duplicate positions from two stacked acquisitions, mixed sizes, a gantry tilt,
per-file rescale; and an RTSTRUCT drawn on the real positions, which must land on the
lesion or fail with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from fusion.cohort import load_cohort
from fusion.config import load_study
from fusion.errors import FusionError
from fusion.io.dicom_rois import RTSTRUCT_UID
from fusion.io.dicom_series import SeriesGeometryError
from fusion.io.images import read_image
from fusion.io.qc import check_case
from fusion.io.rois import read_roi

CT_UID = "1.2.840.10008.5.1.4.1.1.2"
CENTRE = np.array([0.0, 0.0, 0.0])  # the lesion's centre, patient coordinates (mm)
RADIUS = 5.0
SIZE = 40  # pixels per side, 1 mm


def slice_values(ipp: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """HU of one slice: water, a sphere of 80 HU at CENTRE, air in the corners."""
    r, c = np.mgrid[0:SIZE, 0:SIZE]
    points = ipp + c[..., None] * row + r[..., None] * col
    values = np.where(np.linalg.norm(points - CENTRE, axis=-1) < RADIUS, 80.0, 0.0)
    values[:4, :4] = -1000.0
    return values


def new_dataset(sop_class: str) -> Dataset:
    """An empty instance of a SOP class with its file meta, ready to save."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def write_series(folder: Path, positions, *, orientation=(1, 0, 0, 0, 1, 0), slopes=None,
                 acquisitions=None, sizes=None, patient="ANON", study=None,
                 frame=None) -> tuple[str, str]:  # fmt: skip
    """Write one CT file per position; returns (SeriesInstanceUID, FrameOfReferenceUID)."""
    folder.mkdir(parents=True, exist_ok=True)
    series, frame, study = generate_uid(), frame or generate_uid(), study or generate_uid()
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    for k, ipp in enumerate(np.asarray(positions, dtype=float)):
        slope = 1.0 if slopes is None else slopes[k]
        size = SIZE if sizes is None else sizes[k]
        stored = np.round((slice_values(ipp, row, col)[:size, :size] + 1024) / slope)
        ds = new_dataset(CT_UID)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", patient, k + 1
        ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Anon^", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200101", "0900", "1", ""
        ds.ReferringPhysicianName, ds.SeriesNumber, ds.Manufacturer = "", 1, "fusion-test"
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.PixelSpacing, ds.SliceThickness = ["1", "1"], "2"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", "-1024"
        if acquisitions is not None:
            ds.AcquisitionNumber = acquisitions[k]
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.save_as(folder / f"ct{k:03d}.dcm", enforce_file_format=True)
    return series, frame


def write_rtstruct(path: Path, series: str, frame: str, planes_z, radius=RADIUS - 1) -> None:
    """A GTV drawn as circles around CENTRE on axial planes at the given z (mm)."""
    ds = new_dataset(RTSTRUCT_UID)
    ds.Modality = "RTSTRUCT"
    roi = Dataset()
    roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = 1, "GTV", frame
    ds.StructureSetROISequence = [roi]
    contours = []
    for z in planes_z:
        r = np.sqrt(max(radius**2 - (z - CENTRE[2]) ** 2, 1.0))
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        points = np.column_stack([CENTRE[0] + r * np.cos(angles), CENTRE[1] + r * np.sin(angles),
                                  np.full(24, z)])  # fmt: skip
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = 24
        contour.ContourData = [f"{v:.3f}" for v in points.ravel()]
        contours.append(contour)
    item = Dataset()
    item.ReferencedROINumber, item.ContourSequence = 1, contours
    ds.ROIContourSequence = [item]
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series
    ref_study = Dataset()
    ref_study.RTReferencedSeriesSequence = [ref_series]
    ref = Dataset()
    ref.FrameOfReferenceUID, ref.RTReferencedStudySequence = frame, [ref_study]
    ds.ReferencedFrameOfReferenceSequence = [ref]
    ds.save_as(path, enforce_file_format=True)


def write_seg(path: Path, series_folder: Path, label: str) -> None:
    """A DICOM-SEG (highdicom) of the sphere at CENTRE (radius RADIUS - 1), each frame
    drawn from its source file's own position and orientation."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(f) for f in sorted(series_folder.glob("*.dcm"))]
    frames = []
    for ds in sources:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        r, c = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
        points = (np.asarray(ds.ImagePositionPatient, dtype=float)
                  + c[..., None] * iop[:3] + r[..., None] * iop[3:])  # fmt: skip
        frames.append(np.linalg.norm(points - CENTRE, axis=-1) < RADIUS - 1)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=np.stack(frames),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=9,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="fusion-test",
        manufacturer_model_name="test", software_versions="0", device_serial_number="0",
    )  # fmt: skip
    seg.save_as(path)


def axial(z_values) -> list[tuple[float, float, float]]:
    return [(-SIZE / 2, -SIZE / 2, z) for z in z_values]


def lesion_mean(image: sitk.Image, roi: sitk.Image) -> float:
    return float(sitk.GetArrayFromImage(image)[sitk.GetArrayFromImage(roi) > 0].mean())


def qc_of(tmp_path: Path, image_folder: str, roi: str) -> object:
    folder = tmp_path / "cohort"
    pd.DataFrame([{"case_id": "c0", "image": image_folder, "roi": roi, "label": 1}]).to_csv(
        folder / "manifest.csv", index=False
    )
    spec = {"name": "dicom", "seed": 1, "cohort": {"manifest": "cohort/manifest.csv",
                                                   "structures": ["GTV"]}}  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    study = load_study(tmp_path / "study.yaml")
    return check_case(load_cohort(study)[0], study)


def test_a_regular_series_and_its_rtstruct_put_the_roi_on_the_lesion(tmp_path) -> None:
    zs = np.arange(-10, 11, 2.0)
    series, frame = write_series(tmp_path / "cohort" / "ct", axial(zs))
    write_rtstruct(tmp_path / "cohort" / "rs.dcm", series, frame, zs[3:8])
    image = read_image(tmp_path / "cohort" / "ct")
    roi = read_roi(tmp_path / "cohort" / "rs.dcm", image, ["GTV"])
    assert lesion_mean(image, roi) == pytest.approx(80.0)
    assert qc_of(tmp_path, "ct", "rs.dcm").passed


# ------------------------------------------------------------- 1. a missing slice


def test_a_missing_slice_fails_qc_with_the_gap(tmp_path) -> None:
    zs = np.delete(np.arange(-10, 11, 2.0), 6)  # the slice at z = 2 mm is missing
    series, frame = write_series(tmp_path / "cohort" / "ct", axial(zs))
    write_rtstruct(tmp_path / "cohort" / "rs.dcm", series, frame, [-2.0, 0.0, 2.0, 4.0])
    with pytest.raises(SeriesGeometryError) as error:
        read_image(tmp_path / "cohort" / "ct")
    assert error.value.code == "slice_gap"
    assert "2 mm apart, but 4 mm between slices 6 and 7 (ct005.dcm and ct006.dcm" in str(
        error.value
    )
    assert "(1 slice(s) missing?)" in str(error.value)
    qc = qc_of(tmp_path, "ct", "rs.dcm")
    assert [p.code for p in qc.problems] == ["slice_gap"] and not qc.passed


def test_a_contour_plane_between_slices_is_an_error_not_a_neighbour(tmp_path) -> None:
    """Contours on 1 mm planes over a 2 mm series: every other plane matches no slice,
    and rounding it onto a neighbour would cancel that slice by the even-odd rule."""
    zs = np.arange(-10, 11, 2.0)
    series, frame = write_series(tmp_path / "cohort" / "ct", axial(zs))
    write_rtstruct(tmp_path / "cohort" / "rs.dcm", series, frame, [-1.0, 0.0, 1.0])
    image = read_image(tmp_path / "cohort" / "ct")
    with pytest.raises(FusionError, match=r"contour plane at -1.00 mm lies 1.00 mm from"):
        read_roi(tmp_path / "cohort" / "rs.dcm", image, ["GTV"])


# ----------------------------------------- 3. duplicates, stacked acquisitions, mixed sizes


def test_two_acquisitions_stacked_in_one_series_fail_with_their_numbers(tmp_path) -> None:
    zs = np.arange(-4, 5, 2.0)
    positions = axial(np.concatenate([zs, zs]))
    write_series(tmp_path / "ct", positions, acquisitions=[1] * 5 + [2] * 5)
    with pytest.raises(SeriesGeometryError) as error:
        read_image(tmp_path / "ct")
    assert error.value.code == "duplicate_slices"
    assert "5 pair(s) of files share a slice position (ct000.dcm and ct005.dcm;" in str(error.value)
    assert "AcquisitionNumber 1, 2" in str(error.value)


def test_files_of_different_sizes_fail(tmp_path) -> None:
    write_series(tmp_path / "ct", axial([0.0, 2.0, 4.0]), sizes=[SIZE, SIZE, SIZE - 8])
    with pytest.raises(SeriesGeometryError, match="2 different row counts") as error:
        read_image(tmp_path / "ct")
    assert error.value.code == "mixed_geometry"
    assert "1 of 3 differ from the others (ct002.dcm; 40 in the rest)" in str(error.value)


def test_a_rescale_that_differs_per_file_is_read_as_float(tmp_path) -> None:
    zs = np.arange(-4, 5, 2.0)
    write_series(tmp_path / "ct", axial(zs), slopes=[1.0, 0.5, 1.0, 0.25, 1.0])
    image = read_image(tmp_path / "ct")
    assert image.GetPixelID() == sitk.sitkFloat32
    array = sitk.GetArrayFromImage(image)
    for k, z in enumerate(zs):
        expected = slice_values(np.array([-SIZE / 2, -SIZE / 2, z]), np.eye(3)[0], np.eye(3)[1])
        assert np.allclose(array[k], expected, atol=0.5)


# --------------------------------------------------------------------- 2. gantry tilt


@pytest.mark.parametrize("convention", ["tilted planes", "axial planes, sheared positions"])
def test_a_tilted_series_is_resampled_so_the_rtstruct_lands_on_the_lesion(
    tmp_path, convention
) -> None:
    """A head CT with a 20 degree gantry tilt, in the two ways scanners write it: planes
    whose column axis is tilted while the table moves along z, or axial planes whose
    positions shift along y from slice to slice. Either way the stack is sheared; read as
    an unsheared volume, an RTSTRUCT drawn on the planes' real positions lands rows away
    from the lesion (the second way: mean 36 HU where the lesion is 80)."""
    tilt = np.radians(20)
    zs = np.arange(-12, 13, 2.0)
    if convention == "tilted planes":
        orientation = (1, 0, 0, 0, np.cos(tilt), np.sin(tilt))
        positions = [(-SIZE / 2, -SIZE / 2 * np.cos(tilt), z) for z in zs]
    else:
        orientation = (1, 0, 0, 0, 1, 0)
        positions = [(-SIZE / 2, -SIZE / 2 + z * np.tan(tilt), z) for z in zs]
    series, frame = write_series(tmp_path / "cohort" / "ct", positions, orientation=orientation)
    image = read_image(tmp_path / "cohort" / "ct")
    normal = np.cross(orientation[:3], orientation[3:])
    assert np.allclose(np.asarray(image.GetDirection()).reshape(3, 3)[:, 2], normal)
    step = 2 * np.cos(tilt) if convention == "tilted planes" else 2.0
    assert image.GetSpacing()[2] == pytest.approx(step, abs=1e-4)
    array = sitk.GetArrayFromImage(image)
    for point, value in ((CENTRE, 80), (CENTRE + [0, RADIUS + 2, 0], 0)):
        index = image.TransformPhysicalPointToIndex(point.tolist())
        assert array[index[::-1]] == pytest.approx(value, abs=1)
    write_rtstruct_on_planes(tmp_path / "cohort" / "rs.dcm", series, frame, image)
    roi = read_roi(tmp_path / "cohort" / "rs.dcm", image, ["GTV"])
    assert lesion_mean(image, roi) > 75
    # a DICOM-SEG places frames by slice: they follow the slices' shifts
    write_seg(tmp_path / "cohort" / "seg.dcm", tmp_path / "cohort" / "ct", "GTV")
    seg = read_roi(tmp_path / "cohort" / "seg.dcm", image, ["GTV"])
    assert lesion_mean(image, seg) > 78, lesion_mean(image, seg)
    qc = qc_of(tmp_path, "ct", "rs.dcm")
    assert qc.passed and "gantry_tilt" in [p.code for p in qc.problems]
    assert "gantry tilt of 20.0 degrees" in str(qc.problems)


def write_rtstruct_on_planes(path: Path, series: str, frame: str, image: sitk.Image) -> None:
    """An RTSTRUCT whose contours lie in the image's (tilted) planes: circles around the
    lesion's centre in each plane the sphere cuts."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    row, col, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    origin, step = np.asarray(image.GetOrigin()), image.GetSpacing()[2]
    ds = pydicom.dcmread(_template(path, series, frame))
    contours = []
    for k in range(image.GetSize()[2]):
        plane_point = origin + k * step * normal
        distance = float((CENTRE - plane_point) @ normal)
        if abs(distance) >= RADIUS - 1.5:
            continue
        centre = CENTRE - distance * normal
        r = np.sqrt((RADIUS - 1) ** 2 - distance**2)
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        points = centre + r * (np.cos(angles)[:, None] * row + np.sin(angles)[:, None] * col)
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = 24
        contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
        contours.append(contour)
    ds.ROIContourSequence[0].ContourSequence = contours
    ds.save_as(path, enforce_file_format=True)


def _template(path: Path, series: str, frame: str) -> Path:
    write_rtstruct(path, series, frame, [0.0])
    return path
