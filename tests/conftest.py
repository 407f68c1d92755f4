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
# CI=true (.ci/run, and most CI services): everything the suite needs is installed, so a skip for a
# missing optional dependency or model is a failure there (pytest_runtest_makereport below). Skips that
# name the machine's hardware stay skips: no GPU, one GPU where two are needed, and a CPU whose golden
# digest was never recorded (tests/rollout_digest.py; the constraints file pins the versions in it).
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
HARDWARE_SKIPS = ("CUDA", "GPU", "no digest recorded for this machine")
# What `pytest -m gpu` needs besides a GPU: JAX's CUDA plugin (the cuda extra) beside torch's CUDA build.
GPU_INSTALL = 'pip install -e ".[cuda,test]"'


@pytest.fixture(scope="session")
def ref_xml():
    from mjx_env.model import MENAGERIE_ENV, MENAGERIE_HINT, menagerie_dir
    path = menagerie_dir() / "scene.xml"
    if not path.is_file():
        pytest.skip(f"reference Menagerie model not found at {path} (shared/ is not beside the checkout, "
                    f"or {MENAGERIE_ENV} points elsewhere): {MENAGERIE_HINT}")
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


# The files that take longest (summed test times of a profiled run, `--durations=0`; the new
# ones placed by their measured test times), longest first.
# Workers take whole files in collection order (pyproject: --dist loadfile --no-loadscope-reorder),
# so the long ones start early and no worker is left running one alone at the end; the rest follow
# in name order. A stale list costs only balance, never a test.
LONGEST_FIRST = ("test_dynamics.py", "test_recover_actions.py", "test_bench.py", "test_reliability.py", "test_train.py",
                 "test_randomization.py", "test_tools.py", "test_shipped_policy.py", "test_jumps.py",
                 "test_backends.py", "test_gpu.py", "test_actor_inputs.py", "test_dynaflow_data.py",
                 "test_distributed.py", "test_deploy.py", "test_tasks.py", "test_video_gl.py", "test_ci_setup.py")
# The slow group's (`pytest -m slow`, .ci/run's second run): the DynaFlow trainer's single test and
# bench.py --phi's cold run compile Φ's gradient for minutes, the README tour runs every command, Warp builds its kernels, torchrun
# starts two ranks per test.
LONGEST_FIRST_SLOW = ("test_train_dynaflow.py", "test_commands.py", "test_warp.py", "test_dynamics.py", "test_bench.py",
                      "test_distributed.py", "test_tasks.py", "test_dist_failures.py", "test_reliability.py",
                      "test_train.py", "test_randomization.py", "test_jumps.py", "test_actor_inputs.py",
                      "test_dynaflow_data.py", "test_shipped_policy.py", "test_viewer_browser.py", "test_symmetry.py",
                      "test_logger.py")


def cuda_seen() -> tuple[bool, bool]:
    """(torch sees a CUDA device, JAX sees one). Looked up through the modules at call time, so that a
    test can fake either (tests/test_ci_setup.py)."""
    import torch
    from bridge import device
    return bool(torch.cuda.is_available()), bool(device._jax_gpus())


def gpu_mismatch() -> str | None:
    """The one line for a machine where only one of torch and JAX sees a GPU; None otherwise."""
    torch_sees, jax_sees = cuda_seen()
    if torch_sees and not jax_sees:
        return f"torch sees a CUDA device but JAX does not (its CUDA plugin is missing): {GPU_INSTALL}"
    if jax_sees and not torch_sees:
        return ("JAX sees a CUDA device but torch does not (a CPU-only torch build): install torch's CUDA "
                f"build (https://pytorch.org/get-started/locally/), then {GPU_INSTALL}")
    return None


def _selects_gpu_only(config) -> bool:
    """The -m expression asks for the GPU tests (`pytest -m gpu`): it takes a test marked gpu alone
    and leaves an unmarked one."""
    from _pytest.mark.expression import Expression
    expr = config.getoption("markexpr", "")
    if not expr:
        return False
    compiled = Expression.compile(expr)
    match = lambda names: (lambda name, **kwargs: name in names)
    return compiled.evaluate(match({"gpu"})) and not compiled.evaluate(match(set()))


def pytest_configure(config):
    """`pytest -m gpu` where torch and JAX disagree about CUDA: one line naming the install, before
    anything runs (on the controller only: xdist's workers are not started yet)."""
    if not hasattr(config, "workerinput") and _selects_gpu_only(config):
        line = gpu_mismatch()
        if line is not None:
            raise pytest.UsageError(f"pytest -m gpu: {line}")


@pytest.hookimpl(trylast=True)        # after -m and -k have deselected
def pytest_collection_modifyitems(config, items):
    """Longest files first (LONGEST_FIRST, or LONGEST_FIRST_SLOW for `pytest -m slow`). `gpu`-marked tests: skipped with the reason where neither
    torch nor JAX sees a CUDA device; failed with the install line where only one does (a GPU test
    must not pass by skipping on a GPU machine)."""
    order = LONGEST_FIRST_SLOW if items and all(item.get_closest_marker("slow") for item in items) else LONGEST_FIRST
    rank = {name: i for i, name in enumerate(order)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))      # stable: in-file order kept
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    torch_sees, jax_sees = cuda_seen()
    if torch_sees and jax_sees:
        return
    line = gpu_mismatch()
    for item in gpu_items:
        if line is None:
            item.add_marker(pytest.mark.skip(reason="no CUDA device: neither torch nor JAX sees one"))
        else:
            item.stash[GPU_MISMATCH] = line


GPU_MISMATCH = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A GPU test where only one of torch and JAX sees CUDA fails before its fixtures, in one line."""
    line = item.stash.get(GPU_MISMATCH, None)
    if line is not None:
        pytest.fail(line, pytrace=False)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _skip_fails_in_ci(report) -> bool:
    return CI and report.skipped and not hasattr(report, "wasxfail") and \
        not any(word in _skip_reason(report) for word in HARDWARE_SKIPS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skip for a missing dependency or model fails, saying what was missing."""
    report = yield
    if _skip_fails_in_ci(report):
        report.outcome = "failed"
        report.longrepr = f"CI=true: this skip is a failure in CI: {_skip_reason(report)}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (pytest.importorskip at module level)."""
    report = yield
    if _skip_fails_in_ci(report):
        report.outcome = "failed"
        report.longrepr = f"CI=true: this skip is a failure in CI: {_skip_reason(report)}"
    return report
