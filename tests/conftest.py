import os
import shutil
import tempfile

# The suite's generated kernels go to a fresh directory per session, never the user's own
# ~/.cache/netc (compiler/codegen/modules.py cache_dir). Set here, at import time: conftest is
# imported before any test module, so before netc; subprocesses inherit it. A NETC_CACHE
# already set (a CI cache, a developer's choice) is used as is and left alone.
_SESSION_CACHE = None
if not os.environ.get("NETC_CACHE"):
    _SESSION_CACHE = tempfile.mkdtemp(prefix="netc-test-cache-")
    os.environ["NETC_CACHE"] = _SESSION_CACHE

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from hostile import dot  # noqa: E402,F401 (the fixture behind hostile.needs_dot)


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
WILD = REFS.parent / "wild"      # 53 third-party files (refs/wild/SOURCES.md)
PYTHON_LAYER_FILES = {"fasterRCNN_AlexNet", "fasterRCNN_ResNet", "fasterRCNN_VGG", "fasterRCNN_ZynqNet"}


def pytest_collection_modifyitems(config, items):
    if not REF_FILES:
        raise pytest.UsageError(f"reference Caffe files not found at {REFS}: set NETC_REFS")


def pytest_sessionfinish(session, exitstatus):
    if _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def refs():
    assert REF_FILES, f"no reference prototxt files under {REFS} (set NETC_REFS)"
    return REFS
