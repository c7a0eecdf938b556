"""Train = serve for CT slices: the recipes' cached inputs equal what the app feeds the same slice."""

import numpy as np
import pytest
import torch
from PIL import Image

from core.ct_phantoms import ct_phantom_dicom_bytes, make_ct_phantom
from core.guard import check_ct_slice
from core.imaging.ct_input import ct_model_pixels
from core.io import load_image
from core.preprocess import segmenter_input
from training.ct_data import image_stack
from training.data import CxrRecord
from training.segmentation import min_max_batch


@pytest.mark.parametrize("size", [64, 160])
def test_cached_training_input_equals_the_served_input(tmp_path, size):
    phantom = make_ct_phantom("covid", seed=5, size=200)
    served_study = check_ct_slice(load_image(ct_phantom_dicom_bytes(phantom), "slice.dcm"))  # HU in, as uploaded
    export = tmp_path / "slice.png"  # the same slice as the pack stores it: an 8-bit lung-window export
    Image.fromarray((ct_model_pixels(served_study) * 255).round().astype(np.uint8)).save(export)

    record = CxrRecord(image=export, label="covid", source="test", patient_id="p", split="train", lung_mask=None, orig_width=200)
    trained = min_max_batch(torch.from_numpy(image_stack([record], size)))[0].numpy()  # what the recipes feed
    served = segmenter_input(ct_model_pixels(served_study), size)  # what the CT pipeline feeds
    assert trained.shape == served.shape == (1, size, size)
    # the cache stores uint8: one grey level of rounding, stretched by the per-image min-max
    assert np.abs(trained - served).max() < 2.5 / 255
