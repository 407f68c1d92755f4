"""Log JAX's compile events of every Python process, per test, for finding where the suite's time goes.

    PYTHONPATH=tests/compile_log GO2_COMPILE_LOG=/tmp/clog python -m pytest
    python tests/compile_log/report.py /tmp/clog            # per file; --tests: per test

Python imports `sitecustomize` at start-up from the path, so the pytest workers and the commands
that tests start (which inherit PYTHONPATH) all log. Each process appends to GO2_COMPILE_LOG/<pid>.tsv
one row per event: seconds since start, the test that was running (PYTEST_CURRENT_TEST, inherited by
subprocesses too), the command, the event (tracing, lowering, XLA compile, or time the persistent
cache saved), the function, the duration; and a last row with the process's lifetime.
"""
import atexit
import os
import sys
import time

_DIR = os.environ.get("GO2_COMPILE_LOG")
if _DIR:
    _T0 = time.time()
    os.makedirs(_DIR, exist_ok=True)
    _LOG = os.path.join(_DIR, f"{os.getpid()}.tsv")

    def _row(*fields):
        with open(_LOG, "a") as f:
            f.write("\t".join(str(x) for x in fields) + "\n")

    def _where():
        return os.environ.get("PYTEST_CURRENT_TEST", "-").split(" ")[0], " ".join(sys.argv[:2])[-80:]

    def _on_duration(event, seconds, **kw):
        if event.startswith("/jax/core/compile/") or event == "/jax/compilation_cache/compile_time_saved_sec":
            _row("event", f"{time.time() - _T0:.1f}", *_where(), event.rsplit("/", 1)[-1],
                 kw.get("fun_name", "-"), f"{seconds:.3f}")

    # jax.monitoring is registered once jax is imported (importing it here would cost every process
    # that never uses JAX its import time): a meta-path hook waits for the first `import jax`.
    class _AfterJax:
        def find_spec(self, name, path=None, target=None):
            if "jax._src.monitoring" not in sys.modules:
                return None
            sys.meta_path.remove(self)
            sys.modules["jax._src.monitoring"].register_event_duration_secs_listener(_on_duration)
            return None

    sys.meta_path.insert(0, _AfterJax())
    atexit.register(lambda: _row("exit", f"{time.time() - _T0:.1f}", *_where()))
