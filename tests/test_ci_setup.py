"""The suite's own rules (tests/conftest.py), each in a pytest of its own: under CI=true a skip for a
missing model fails; `pytest -m gpu` where only one of torch and JAX sees CUDA stops in one line
naming the install; where neither does, the GPU tests skip and say why."""
import os
import subprocess
import sys

from conftest import GPU_INSTALL, REPO

# A pytest plugin (-p fake_cuda) that makes the device queries answer as on a GPU machine with one
# side's CUDA missing: FAKE_CUDA=torch (torch sees a device, JAX does not) or FAKE_CUDA=jax.
FAKE_CUDA = """
import os
import torch
from bridge import device
side = os.environ["FAKE_CUDA"]
torch.cuda.is_available = lambda: side == "torch"
device._jax_gpus = lambda: ["fake-gpu"] if side == "jax" else []
"""


def pytest_run(tmp_path, *args, **env):
    (tmp_path / "fake_cuda.py").write_text(FAKE_CUDA)
    run_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
                           "-o", "addopts=-q -rfEs", *args], cwd=REPO, env=run_env,
                          capture_output=True, text=True, timeout=600)


# Two tests, one marked gpu, in a folder of their own; the suite's conftest loaded as a plugin (-p
# conftest). Cheaper than collecting tests/test_gpu.py, and the same hooks.
GPU_FILE = """
import pytest

@pytest.mark.gpu
def test_on_the_gpu():
    pass

def test_on_the_cpu():
    pass
"""


def gpu_run(tmp_path, *args, **env):
    folder = tmp_path / "gpu_case"
    folder.mkdir()
    (folder / "test_case.py").write_text(GPU_FILE)
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    (tmp_path / "fake_cuda.py").write_text(FAKE_CUDA)
    run_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "tests"), str(REPO)]),
               **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest", "-q",
                           "-rfEs", "-c", str(folder / "pytest.ini"), *args, "gpu_case"], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=600)


MENAGERIE_TESTS = ["tests/test_model.py", "-k", "reference"]


def test_missing_menagerie_fails_under_ci(tmp_path):
    missing = tmp_path / "no_menagerie"
    r = pytest_run(tmp_path, *MENAGERIE_TESTS, CI="true", GO2_MENAGERIE=str(missing))
    assert r.returncode == 1, r.stdout[-3000:]
    # the fixture's skip happens at setup: a failure there is reported as an error
    assert "4 errors" in r.stdout and "skipped" not in r.stdout, r.stdout[-3000:]
    assert (f"ERROR tests/test_model.py::test_masses_match_reference - CI=true: this skip is a failure in CI: "
            f"reference Menagerie model not found at {missing / 'scene.xml'}") in r.stdout


def test_missing_menagerie_skips_with_its_reason_elsewhere(tmp_path):
    missing = tmp_path / "no_menagerie"
    r = pytest_run(tmp_path, *MENAGERIE_TESTS, CI="", GO2_MENAGERIE=str(missing))
    assert r.returncode == 0, r.stdout[-3000:]
    assert "4 skipped" in r.stdout and "failed" not in r.stdout, r.stdout[-3000:]
    assert f"reference Menagerie model not found at {missing / 'scene.xml'}" in r.stdout   # -rs: the reason
    assert "GO2_MENAGERIE" in r.stdout


def test_gpu_tests_stop_in_one_line_where_only_torch_sees_cuda(tmp_path):
    r = gpu_run(tmp_path, "-p", "fake_cuda", "-m", "gpu", FAKE_CUDA="torch")
    assert r.returncode == 4, r.stdout + r.stderr
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert lines == [f"ERROR: pytest -m gpu: torch sees a CUDA device but JAX does not (its CUDA plugin is "
                     f"missing): {GPU_INSTALL}"], lines


def test_gpu_tests_stop_in_one_line_where_only_jax_sees_cuda(tmp_path):
    r = gpu_run(tmp_path, "-p", "fake_cuda", "-m", "gpu", FAKE_CUDA="jax")
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 4 and len(lines) == 1, lines
    assert lines[0].startswith("ERROR: pytest -m gpu: JAX sees a CUDA device but torch does not") and \
        lines[0].endswith(GPU_INSTALL)


def test_gpu_tests_in_a_wider_selection_fail_where_only_torch_sees_cuda(tmp_path):
    """Not asked for alone (no -m), each GPU test fails with the same line, never skips; the rest run."""
    r = gpu_run(tmp_path, "-p", "fake_cuda", FAKE_CUDA="torch")
    # it fails at setup, before its fixtures ask for the device: pytest counts that as an error
    assert r.returncode == 1 and "1 passed, 1 error" in r.stdout and "skipped" not in r.stdout, r.stdout[-3000:]
    assert ("ERROR at setup of test_on_the_gpu _______________________\ntorch sees a CUDA device but JAX does not (its CUDA "
            f"plugin is missing): {GPU_INSTALL}\n") in r.stdout, r.stdout


def test_gpu_tests_skip_with_the_reason_where_neither_sees_cuda(tmp_path):
    """Also under CI=true: a machine without a GPU is no missing install."""
    r = gpu_run(tmp_path, "-p", "fake_cuda", FAKE_CUDA="neither", CI="true")
    assert r.returncode == 0 and "1 passed, 1 skipped" in r.stdout, r.stdout[-3000:]
    assert "SKIPPED [1] gpu_case/test_case.py:4: no CUDA device: neither torch nor JAX sees one" in r.stdout, r.stdout


def test_skip_for_a_missing_package_fails_under_ci_also_at_import(tmp_path):
    """A module that skips itself at import (pytest.importorskip of an extra that is not installed)."""
    folder = tmp_path / "import_case"
    folder.mkdir()
    (folder / "test_case.py").write_text('import pytest\npytest.importorskip("no_such_package_go2")\n'
                                         'def test_x():\n    pass\n')
    (folder / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    for ci, expected in (("true", "1 error"), ("", "1 skipped")):
        r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest", "-q", "-rfEs",
                            "-c", str(folder / "pytest.ini"), str(folder)], cwd=REPO, env={**env, "CI": ci},
                           capture_output=True, text=True, timeout=600)
        assert expected in r.stdout and "no_such_package_go2" in r.stdout, r.stdout[-3000:]
        assert r.returncode == (2 if ci else 5), r.stdout[-3000:]     # a collection error; nothing to run
