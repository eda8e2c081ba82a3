import os
from pathlib import Path

import pytest

def _find_refs() -> Path:
    """The 28 Caffe reference files live in ../shared/refs/caffe beside the checkout."""
    if os.environ.get("NETC_REFS"):
        return Path(os.environ["NETC_REFS"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        for cand in (parent / "shared" / "refs" / "caffe", parent / "refs" / "caffe"):
            if cand.is_dir():
                return cand
    return here.parents[2] / "shared" / "refs" / "caffe"


REFS = _find_refs()
REF_FILES = sorted(REFS.glob("*.prototxt"))
PYTHON_LAYER_FILES = {"fasterRCNN_AlexNet", "fasterRCNN_ResNet", "fasterRCNN_VGG", "fasterRCNN_ZynqNet"}


def pytest_collection_modifyitems(config, items):
    if not REF_FILES:
        raise pytest.UsageError(f"reference Caffe files not found at {REFS}: set NETC_REFS")


@pytest.fixture
def refs():
    assert REF_FILES, f"no reference prototxt files under {REFS} (set NETC_REFS)"
    return REFS
