"""DICOM SEG export (``core.dicom_seg``): masks round-trip exactly, references point at the source, no identifiers.

Sources are the project's synthetic DICOM writers: the X-ray demo DICOM (``core.phantoms``), the CT
phantom slice (``core.ct_phantoms``) and CT series / Enhanced CT (``core.io.series.dicom_series_bytes``),
each carrying obviously fake identifiers that must not reach the SEG.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from core.ct_phantoms import ct_phantom_dicom_bytes, make_ct_phantom
from core.ct_volume_phantoms import make_ct_volume
from core.dicom_seg import (
    Algorithm,
    case_segmentation,
    check_exportable,
    is_dicom_case,
    result_segments,
    segmentation_for,
)
from core.errors import ChestReviewError, SegmentationExportError
from core.guard import check_ct_slice
from core.io import dicom_series_bytes, load_dicom_series, load_image, load_nifti, nifti_bytes, volume_from_canonical
from core.io.series import FAKE_IDENTITY
from core.phantoms import make_phantom, write_demo_cases
from tests.core.conftest import IDENTIFIERS as CT_IDENTIFIERS

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
IDENTIFIERS = {**CT_IDENTIFIERS, "StudyID": "STUDY-4711", "OperatorsName": "Operator^Olga"}  # none may reach the SEG
IDENTIFYING_KEYWORDS = set(IDENTIFIERS) | set(FAKE_IDENTITY) | {
    "PatientSex", "OtherPatientIDs", "PatientAddress", "InstitutionAddress", "StationName", "ContentCreatorName"}
LUNG_CARD = SimpleNamespace(name="ct-lungs-resunet", version="2.0.0", weights_sha256="ab" * 32)
INFECTION_CARD = SimpleNamespace(name="infnet-slim", version="1.1.0", weights_sha256="cd" * 32)
MULTICLASS_CARD = SimpleNamespace(name="infnet-multiclass", version="1.0.0", weights_sha256="ef" * 32)
VOLUME_SHAPE, VOLUME_SPACING = (40, 112, 112), (6.0, 3.1, 3.1)


def read_seg(data: bytes) -> tuple[Dataset, hd.seg.Segmentation]:
    assert data[128:132] == b"DICM"  # Part 10
    return pydicom.dcmread(io.BytesIO(data)), hd.seg.segread(io.BytesIO(data))


def assert_no_identifiers(data: bytes, values) -> None:
    """No identifying value anywhere in the bytes; every identifying attribute, at any depth, absent or empty."""
    for value in values:
        assert value.encode() not in data, value
    ds = pydicom.dcmread(io.BytesIO(data))

    def walk(dataset: Dataset) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    walk(item)
            elif element.keyword in IDENTIFYING_KEYWORDS:
                assert element.value in ("", None), element.keyword

    walk(ds)
    assert ds.PatientName == "" and ds.PatientID == "" and ds.PatientBirthDate == ""


def segments_by_label(seg: hd.seg.Segmentation) -> dict[str, Dataset]:
    return {item.SegmentLabel: item for item in seg.SegmentSequence}


def referenced_instances(ds: Dataset) -> set[str]:
    return {item.ReferencedSOPInstanceUID for series in ds.ReferencedSeriesSequence
            for item in series.ReferencedInstanceSequence}


def blob(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# --------------------------------------------------------------------------------------------------
# Chest X-ray: the demo DICOM (DX, no Frame of Reference: the SEG is aligned pixel for pixel)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xray_study(tmp_path_factory):
    paths = write_demo_cases(tmp_path_factory.mktemp("xray"), size=256)
    return load_image(next(p for p in paths if p.suffix == ".dcm").read_bytes())


def test_xray_lung_mask_and_a_region_round_trip(xray_study):
    lung = blob(xray_study.pixels.shape, slice(40, 200), slice(30, 120))
    region = blob(xray_study.pixels.shape, slice(60, 90), slice(150, 170))
    data = segmentation_for(xray_study, {"lung": lung, "missed finding": region}, algorithms={"lung": LUNG_CARD})
    ds, seg = read_seg(data)
    reference = xray_study.dicom_reference
    assert ds.SOPClassUID == SEG_STORAGE and ds.Modality == "SEG"
    assert ds.StudyInstanceUID == reference.study_instance_uid
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == reference.series_instance_uid
    source = reference.frames[0].sop_instance_uid
    assert referenced_instances(ds) == {source}
    assert "FrameOfReferenceUID" not in ds  # a DX without one: pixel-aligned with its source
    pixels = seg.get_pixels_by_source_instance([source], segment_numbers=[1, 2])
    assert np.array_equal(pixels[0, ..., 0].astype(bool), lung)
    assert np.array_equal(pixels[0, ..., 1].astype(bool), region)
    segments = segments_by_label(seg)
    assert segments["Lung"].SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segments["Lung"].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("ct-lungs-resunet", "2.0.0")
    assert "ab" * 32 in algorithm.AlgorithmParameters
    assert segments["Reviewer region: missed finding"].SegmentAlgorithmType == "MANUAL"
    assert_no_identifiers(data, ["SYNTHETIC^PHANTOM", "SYNTHETIC-0001"])


def test_the_cxr_result_exports_its_lung_mask_and_the_regions(xray_study):
    result = SimpleNamespace(segmenter=LUNG_CARD, lung_mask=blob(xray_study.pixels.shape, slice(10, 50), slice(10, 50)))
    masks, algorithms = result_segments(result)
    assert list(masks) == ["lung"] and algorithms == {"lung": LUNG_CARD}
    region = blob(xray_study.pixels.shape, slice(100, 120), slice(100, 140))
    _, seg = read_seg(case_segmentation(xray_study, result, {"false finding": region}))  # what the page's button gives
    pixels = seg.get_pixels_by_source_instance([xray_study.dicom_reference.frames[0].sop_instance_uid],
                                               segment_numbers=[1, 2])
    assert np.array_equal(pixels[0, ..., 0].astype(bool), result.lung_mask)
    assert np.array_equal(pixels[0, ..., 1].astype(bool), region)
    assert [item.SegmentAlgorithmType for item in seg.SegmentSequence] == ["AUTOMATIC", "MANUAL"]



def test_saved_regions_become_one_manual_segment_per_tag(xray_study):
    """What the page passes: a reviewer's saved ``Region``s, one mask per tag (``regions_by_tag``)."""
    from core.reviews.regions import Region, regions_by_tag

    regions = [Region("rectangle", "missed finding", ((10, 10), (30, 10), (30, 20), (10, 20))),
               Region("polygon", "other", ((40, 40), (60, 40), (50, 60))),
               Region("rectangle", "missed finding", ((70, 70), (80, 70), (80, 80), (70, 80)))]
    masks = regions_by_tag(regions, xray_study.pixels.shape)
    assert list(masks) == ["missed finding", "other"] and masks["missed finding"][15, 20] and masks["missed finding"][75, 75]
    result = SimpleNamespace(segmenter=LUNG_CARD, lung_mask=blob(xray_study.pixels.shape, slice(10, 50), slice(10, 50)))
    _, seg = read_seg(case_segmentation(xray_study, result, masks))
    assert [item.SegmentLabel for item in seg.SegmentSequence][1:] == ["Reviewer region: missed finding", "Reviewer region: other"]
    pixels = seg.get_pixels_by_source_instance([xray_study.dicom_reference.frames[0].sop_instance_uid],
                                               segment_numbers=[2, 3])
    assert np.array_equal(pixels[0, ..., 0].astype(bool), masks["missed finding"])
    assert np.array_equal(pixels[0, ..., 1].astype(bool), masks["other"])

# --------------------------------------------------------------------------------------------------
# CT slice: patient coordinates, lung + infection split + a reviewer region
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct_slice():
    phantom = make_ct_phantom("covid", seed=2, size=128)
    study = check_ct_slice(load_image(ct_phantom_dicom_bytes(phantom, **IDENTIFIERS), "Doe_Jane.dcm"))
    return phantom, study


def ct_slice_result(phantom, study):
    labels = np.zeros(study.pixels.shape, dtype=np.uint8)
    labels[40:60, 30:50], labels[70:80, 80:100] = 1, 2
    return SimpleNamespace(lung_mask=phantom.lung_mask.astype(bool), infection_labels=labels,
                           cards={"lungs": LUNG_CARD, "infection": INFECTION_CARD, "multiclass": MULTICLASS_CARD})


def test_ct_slice_segments_round_trip_with_their_codes(ct_slice):
    phantom, study = ct_slice
    masks, algorithms = result_segments(ct_slice_result(phantom, study))
    assert list(masks) == ["lung", "infection", "ground glass opacity", "consolidation"]
    masks["wrong location"] = blob(study.pixels.shape, slice(5, 15), slice(5, 25))
    data = segmentation_for(study, masks, algorithms=algorithms)
    ds, seg = read_seg(data)
    reference = study.dicom_reference
    assert ds.FrameOfReferenceUID == reference.frame_of_reference_uid
    assert ds.StudyInstanceUID == reference.study_instance_uid
    assert referenced_instances(ds) == {reference.frames[0].sop_instance_uid}
    position = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    assert np.allclose([float(v) for v in position], reference.frames[0].position)
    pixels = seg.get_pixels_by_source_instance([reference.frames[0].sop_instance_uid],
                                               segment_numbers=[1, 2, 3, 4, 5])[0]
    for number, mask in enumerate(masks.values()):
        assert np.array_equal(pixels[..., number].astype(bool), mask), number
    codes = {label: (item.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                     item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
                     item.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                     item.SegmentAlgorithmType) for label, item in segments_by_label(seg).items()}
    assert codes == {
        "Lung": ("91723000", "SCT", "39607008", "AUTOMATIC"),
        "Infection": ("49755003", "SCT", "52988006", "AUTOMATIC"),
        "Ground glass opacity": ("49755003", "DCM", "112120", "AUTOMATIC"),
        "Consolidation": ("49755003", "RADLEX", "RID43255", "AUTOMATIC"),
        "Reviewer region: wrong location": ("309825002", "DCM", "111099", "MANUAL"),
    }
    algorithm = segments_by_label(seg)["Consolidation"].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("infnet-multiclass", "1.0.0")
    assert_no_identifiers(data, IDENTIFIERS.values())


def test_a_lossy_source_gives_a_lossy_seg_and_a_slice_without_thickness_is_refused():
    phantom = make_ct_phantom("covid", seed=5, size=128)
    study = load_image(ct_phantom_dicom_bytes(phantom, LossyImageCompression="01"))
    mask = phantom.lung_mask.astype(bool)
    ds, seg = read_seg(segmentation_for(study, {"lung": mask}))
    assert ds.LossyImageCompression == "01"  # derived from a lossy image: the SEG says so
    pixels = seg.get_pixels_by_source_instance([study.dicom_reference.frames[0].sop_instance_uid])
    assert np.array_equal(pixels[0, ..., 0].astype(bool), mask)
    thin = load_image(ct_phantom_dicom_bytes(phantom, SliceThickness=None))
    with pytest.raises(SegmentationExportError, match="needs the source's Slice Thickness"):
        segmentation_for(thin, {"lung": mask})


def test_without_the_split_only_the_infection_is_exported(ct_slice):
    phantom, study = ct_slice
    result = ct_slice_result(phantom, study)
    del result.cards["multiclass"]
    masks, algorithms = result_segments(result)
    assert list(masks) == ["lung", "infection"] and set(algorithms) == {"lung", "infection"}


# --------------------------------------------------------------------------------------------------
# CT volume: a shuffled DICOM series and an Enhanced CT file
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct_volume_case():
    return make_ct_volume("covid", seed=3, shape=VOLUME_SHAPE, spacing_mm=VOLUME_SPACING)


def region_3d() -> np.ndarray:
    """A reviewer's box on slices 20 and 21 (as the regions helper's masks come: one per tag, the volume's shape)."""
    mask = np.zeros(VOLUME_SHAPE, dtype=bool)
    mask[20:22, 30:40, 50:60] = True
    return mask


def instance_slices(files: list[bytes]) -> dict[str, int]:
    """SOP Instance UID -> canonical slice index, from each file's own position (independent of the loader)."""
    nz, dz = VOLUME_SHAPE[0], VOLUME_SPACING[0]
    slices = {}
    for data in files:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        slices[ds.SOPInstanceUID] = round(float(ds.ImagePositionPatient[2]) / dz + (nz - 1) / 2)
    return slices


def test_series_masks_land_on_the_slice_each_file_holds(ct_volume_case):
    files = dicom_series_bytes(ct_volume_case.hu, VOLUME_SPACING, shuffle_seed=7)
    volume = load_dicom_series(files)
    masks = {"lung": ct_volume_case.lung_mask, "ground glass opacity": ct_volume_case.ggo_mask,
             "consolidation": ct_volume_case.consolidation_mask,
             "missed finding": region_3d()}
    data = segmentation_for(SimpleNamespace(volume=volume, case_hash="x"), masks,  # as the page's OpenedVolume
                            algorithms={"lung": LUNG_CARD,
                                        "ground glass opacity": Algorithm("infnet-multiclass", "1.0.0"),
                                        "consolidation": ("infnet-multiclass", "1.0.0")})
    ds, seg = read_seg(data)
    slices = instance_slices(files)
    assert ds.FrameOfReferenceUID == volume.dicom_reference.frame_of_reference_uid
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.dicom_reference.series_instance_uid
    assert referenced_instances(ds) == set(slices)  # every slice of the series is a source image
    uids = list(slices)
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3, 4], assert_missing_frames_are_empty=True)
    for number, mask in enumerate(masks.values()):
        expected = mask[[slices[uid] for uid in uids]]  # canonical [z, y, x]: row = y, column = x on these axial files
        assert np.array_equal(pixels[..., number].astype(bool), expected), number
    assert int(ds.NumberOfFrames) < 4 * VOLUME_SHAPE[0]  # empty frames are left out
    assert_no_identifiers(data, FAKE_IDENTITY.values())


def test_enhanced_ct_masks_round_trip_by_frame(ct_volume_case):
    files = dicom_series_bytes(ct_volume_case.hu, VOLUME_SPACING, enhanced=True)
    volume = load_dicom_series(files)
    reference = volume.dicom_reference
    assert reference.multi_frame and len({frame.sop_instance_uid for frame in reference.frames}) == 1
    data = segmentation_for(volume, {"lung": ct_volume_case.lung_mask})
    ds, seg = read_seg(data)
    numbers = [frame.frame_number for frame in reference.frames]  # stack order: inferior to superior
    pixels = seg.get_pixels_by_source_frame(reference.frames[0].sop_instance_uid, numbers,
                                            assert_missing_frames_are_empty=True)
    assert np.array_equal(pixels[..., 0].astype(bool), np.transpose(volume.to_source_grid(ct_volume_case.lung_mask),
                                                                    (2, 1, 0)))
    assert segments_by_label(seg)["Lung"].SegmentAlgorithmType == "MANUAL"  # no algorithm given
    assert_no_identifiers(data, FAKE_IDENTITY.values())


# --------------------------------------------------------------------------------------------------
# Refusals and the loader's side
# --------------------------------------------------------------------------------------------------


def test_cases_not_uploaded_as_dicom_raise_the_typed_error(tmp_path, ct_volume_case):
    png = next(p for p in write_demo_cases(tmp_path, size=128) if p.suffix == ".png")
    nifti = load_nifti(nifti_bytes(ct_volume_case.hu[:8], VOLUME_SPACING))
    for source in (load_image(png.read_bytes()), make_phantom("normal", seed=0, size=128).to_study(),
                   make_ct_phantom("covid", seed=0, size=128).to_study(), nifti,
                   volume_from_canonical(ct_volume_case.hu, VOLUME_SPACING)):
        assert not is_dicom_case(source)
        with pytest.raises(SegmentationExportError, match="needs a case that was uploaded as DICOM") as raised:
            shape = source.pixels.shape if hasattr(source, "pixels") else source.hu.shape
            segmentation_for(source, {"lung": np.zeros(shape, bool)})
        assert isinstance(raised.value, ChestReviewError)


def test_a_dicom_file_without_uids_is_refused_naming_what_is_missing(ct_dicom):
    study = load_image(ct_dicom.make(ct_dicom.slice_hu(64)))  # the conftest's CT file: no Study/Series UIDs
    assert is_dicom_case(study)
    with pytest.raises(SegmentationExportError, match="Study Instance UID, Series Instance UID") as raised:
        check_exportable(study)
    assert "1.2." not in str(raised.value)  # the message never quotes a value of the file


def test_masks_of_the_wrong_shape_or_with_free_text_names_are_refused(ct_slice):
    _, study = ct_slice
    with pytest.raises(ValueError, match=r"segments\['lung'\]: expected the image's shape"):
        segmentation_for(study, {"lung": np.zeros((10, 10), bool)})
    with pytest.raises(ValueError, match="not a plain tag"):
        segmentation_for(study, {"Jane Doe's lesion!": np.zeros(study.pixels.shape, bool)})
    with pytest.raises(ValueError, match=r"algorithms: \['infection'\] name no segment"):
        segmentation_for(study, {"lung": np.zeros(study.pixels.shape, bool)}, algorithms={"infection": LUNG_CARD})


def test_source_planes_are_the_source_grid_as_slice_row_column(ct_volume_case):
    mask = ct_volume_case.lung_mask[:10]
    for volume in (load_nifti(nifti_bytes(ct_volume_case.hu[:10], VOLUME_SPACING, orientation="RAS")),
                   load_dicom_series(dicom_series_bytes(ct_volume_case.hu[:10], VOLUME_SPACING, shuffle_seed=1))):
        assert np.array_equal(volume.to_source_planes(mask), np.transpose(volume.to_source_grid(mask), (2, 1, 0)))


def test_the_linkage_keys_stay_out_of_metadata_and_repr(ct_slice, ct_volume_case):
    _, study = ct_slice
    volume = load_dicom_series(dicom_series_bytes(ct_volume_case.hu[:6], VOLUME_SPACING))
    for source in (study, volume):
        reference = source.dicom_reference
        uids = [reference.study_instance_uid, reference.series_instance_uid, reference.frame_of_reference_uid,
                reference.frames[0].sop_instance_uid]
        assert all(uids)
        shown = repr(source) + str(source.metadata) + repr(reference) + repr(reference.frames)
        assert not any(uid in shown for uid in uids)
        assert not any(value in shown for value in [*IDENTIFIERS.values(), *FAKE_IDENTITY.values()])
