"""Is this input fit for the chosen analysis? One module per task; each refuses with a typed ``InputError``.

``cxr``: frontal chest radiographs (the Chest X-ray page). ``ct_slice``: one axial chest CT slice
(the CT slice page). ``modalities``: the DICOM modality tables both share.
"""

from .ct_slice import check_ct_slice
from .cxr import MAX_ASPECT_RATIO, MIN_SIDE_PX, check_chest_xray

__all__ = ["MAX_ASPECT_RATIO", "MIN_SIDE_PX", "check_chest_xray", "check_ct_slice"]
