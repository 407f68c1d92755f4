import os
from pathlib import Path

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

REPO = Path(__file__).resolve().parent.parent
OWN_XML = REPO / "Unitree_go2" / "go2_mjx_gym.xml"
REF_DIR = REPO.parent / "shared" / "reference" / "unitree_go2"


@pytest.fixture(scope="session")
def ref_xml():
    path = REF_DIR / "scene.xml"
    if not path.is_file():
        pytest.skip(f"reference Menagerie model not found at {path} (shared/ is not beside the checkout)")
    return path


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests run only where both torch and JAX see a CUDA device (`pytest -m gpu`)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    from bridge.device import gpu_available
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device visible to both torch and JAX")
    for item in gpu_items:
        item.add_marker(skip)
