"""The bundled image-kind gate on real pack images and a real photo (skipped when ../shared/data is absent).

Files go through ``core.io.load_image`` as uploads do. The images are test-split images (and the
held-out astronaut photo), never seen in training; the two cases the issue reports (the SARS-CoV-2 CT
slice ``Covid_1.jpg`` and scikit-image's astronaut, which the X-ray models called "tb" and "normal")
must be refused on the Chest X-ray page.
"""

import io
import random

import numpy as np
import pytest
from PIL import Image

from core.errors import UnsupportedInputError
from core.guard.image_kind import ImageKindGate, check_image_kind
from core.io import load_image
from core.registry import Registry
from tests.conftest import DATA
from training.ct_data import read_ct_infection_records, read_ct_slice_records
from training.data import read_cxr_records

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not (DATA / "ct_slices" / "labels.csv").is_file(), reason="real data pack not present"),
]
PER_KIND = 12


@pytest.fixture(scope="module")
def gate(bundled_weights_dir):
    registry = Registry.open(bundled_weights_dir)
    if not registry.cards("image-kind"):
        pytest.skip("no bundled image-kind gate")
    return ImageKindGate(registry)


def upload(path):
    return load_image(path.read_bytes(), path.name)


def astronaut_png():
    from skimage.data import astronaut

    buffer = io.BytesIO()
    Image.fromarray(astronaut()).save(buffer, format="PNG")
    return load_image(buffer.getvalue(), "astronaut.png")


def sample(paths, count, seed=0):
    return random.Random(seed).sample(sorted(paths), min(count, len(paths)))


def test_radiographs_are_called_chest_xray(gate):
    xrays = sample([r.image for r in read_cxr_records(DATA) if r.split == "test"], PER_KIND)
    kinds = [max(p := gate.classify(upload(path)), key=p.get) for path in xrays]
    assert kinds.count("chest-xray") >= PER_KIND - 1, kinds


def test_ct_slices_are_called_chest_ct(gate):
    slices = [r.image for r in read_ct_slice_records(DATA) if r.split == "test"]
    slices += [r.image for r in read_ct_infection_records(DATA) if r.split == "test" and r.subset != "multiclass-train"]
    kinds = [max(p := gate.classify(upload(path)), key=p.get) for path in sample(slices, PER_KIND)]
    assert kinds.count("chest-ct") >= PER_KIND - 1, kinds


def test_the_issue_examples_are_refused_on_the_xray_page(gate):
    covid_1 = DATA / "ct_slices" / "images" / "sarscov2-ct" / "sarscov2-ct__covid__Covid_1.jpg"
    with pytest.raises(UnsupportedInputError, match="axial CT slice; use the CT slice page"):
        check_image_kind(upload(covid_1), "chest-xray", gate)
    assert check_image_kind(upload(covid_1), "chest-ct", gate).warnings == upload(covid_1).warnings
    for page in ("chest-xray", "chest-ct"):
        with pytest.raises(UnsupportedInputError, match="does not look like a chest radiograph or CT slice"):
            check_image_kind(astronaut_png(), page, gate)


def test_demo_phantoms_pass_their_pages(gate):
    from core.phantoms import make_phantom

    for label in ("normal", "covid", "tb", "bacterial", "viral"):
        study = make_phantom(label, seed=0).to_study()
        probabilities = gate.classify(study)
        assert max(probabilities, key=probabilities.get) == "chest-xray", (label, probabilities)
        check_image_kind(study, "chest-xray", gate)
    try:
        from core.ct_phantoms import make_ct_phantom
    except ImportError:
        return
    for label in ("non-covid", "covid"):
        probabilities = gate.classify(make_ct_phantom(label, seed=0).to_study())
        assert max(probabilities, key=probabilities.get) == "chest-ct", (label, probabilities)
        assert np.isclose(sum(probabilities.values()), 1.0)
