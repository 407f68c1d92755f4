import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# One XLA compilation per distinct program for the whole run: many tests build an env (or start a
# command) whose step is the same program, and on a 2-core CPU each compile of an MJX step takes
# most of a minute. JAX's persistent cache is keyed on the program and compiler options, so a hit
# is the same executable; a fresh directory per run keeps every run's compiles its own. The
# variables reach the commands that tests start as subprocesses too.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="go2-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The commands (train, play, collect, bench) run JAX's float32 matmuls at "highest" (bridge/device.py),
# and the precision is part of every compiled program: the tests run at it too, so that they check
# the programs users run, and a test and a command it starts share compiles (bench.py's MJX env
# step loads the one the tests compiled).
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

REPO = Path(__file__).resolve().parent.parent
# The MJX env that the CPU tests step (the golden digest, standing, parity, the bridge, host syncs):
# the default TaskConfig at this batch, tests/rollout_digest.py's. A batch size and every constant
# of the config are part of the compiled program, so sharing both makes it one compile per run
# (each other user loads it from the persistent cache).
MJX_BATCH = 8
OWN_XML = REPO / "Unitree_go2" / "go2_mjx_gym.xml"
REF_DIR = REPO.parent / "shared" / "reference" / "unitree_go2"


@pytest.fixture(scope="session")
def ref_xml():
    path = REF_DIR / "scene.xml"
    if not path.is_file():
        pytest.skip(f"reference Menagerie model not found at {path} (shared/ is not beside the checkout)")
    return path


def c_model_at_warp_cap(env_cfg):
    """The Go2 model for C MuJoCo with MuJoCo Warp's solver caps (WarpConfig): at the model's own
    4 iterations C stops its solve early at hard landings, where Warp (at 20) has converged."""
    from mjx_env.config import WarpConfig
    from mjx_env.model import load_go2
    g = load_go2(None, env_cfg)
    for m in (g.mj_model, g.physics_mj_model):
        WarpConfig().set_caps(m)
    return g


class _Digests(dict):
    """backend -> tests/rollout_digest.py's digest of the default env, each computed when first asked
    for (a worker that only checks the C MuJoCo backend never compiles the MJX one)."""
    def __missing__(self, backend):
        from rollout_digest import rollout_digest
        digest, events = rollout_digest(backend)
        assert min(events.values()) >= 1, events     # resampling, a reset, a time-out, a bad action happened
        self[backend] = digest
        return digest


@pytest.fixture(scope="session")
def default_digests():
    return _Digests()


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): one worker per core, at most 4. Most of the suite's time is XLA
    compiling MJX programs, which runs on one core; a worker takes whole files (--dist loadfile), so a
    module's fixtures are built once, and workers share compiles through the cache above."""
    from mjx_env.physics import cpu_threads
    return max(1, min(cpu_threads(), 4))


# The files that take longest (summed test times of a profiled run, `--durations=0`), longest first.
# Workers take whole files in collection order (pyproject: --dist loadfile --no-loadscope-reorder),
# so the long ones start early and no worker is left running one alone at the end; the rest follow
# in name order. A stale list costs only balance, never a test.
LONGEST_FIRST = ("test_dynamics.py", "test_randomization.py", "test_reliability.py", "test_train.py",
                 "test_bench.py", "test_tools.py", "test_shipped_policy.py", "test_jumps.py", "test_backends.py",
                 "test_gpu.py", "test_actor_inputs.py", "test_dynaflow_data.py", "test_distributed.py",
                 "test_deploy.py")


def pytest_collection_modifyitems(config, items):
    """Longest files first (LONGEST_FIRST); `gpu`-marked tests run only where both torch and JAX see
    a CUDA device (`pytest -m gpu`)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))      # stable: in-file order kept
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    from bridge.device import gpu_available
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device visible to both torch and JAX")
    for item in gpu_items:
        item.add_marker(skip)
