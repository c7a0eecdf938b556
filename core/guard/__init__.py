"""Is this input fit for the chosen analysis? One module per task; each refuses with a typed ``InputError``.

``cxr``: frontal chest radiographs (the Chest X-ray page). ``ct_slice``: one axial chest CT slice
(the CT slice page). ``ct_volume``: a chest CT volume (the CT volume page). ``modalities``: the DICOM
modality tables they share.
"""

from .ct_slice import check_ct_slice
from .ct_volume import MAX_VOXELS, MIN_SLICES, check_ct_volume, check_lung_coverage
from .cxr import MAX_ASPECT_RATIO, MIN_SIDE_PX, check_chest_xray

__all__ = [
    "MAX_ASPECT_RATIO", "MAX_VOXELS", "MIN_SIDE_PX", "MIN_SLICES", "check_chest_xray", "check_ct_slice", "check_ct_volume",
    "check_lung_coverage",
]
