"""Run one command's main() over several argument lists in one interpreter, and print each case's
exit code and stderr as JSON. The bad-input tests use it: a case that stops at its first line of
output needs no fresh interpreter of its own (torch and JAX take seconds to import), and every case
still goes through the command's own main(), argument parser and error report.

    python tests/main_cases.py train '[["--num_envs", "0"], ...]'
"""
import contextlib
import importlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_cases(command: str, cases: list) -> list:
    main = importlib.import_module(command).main
    out = []
    for argv in cases:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:          # argparse's own errors
                rc = exc.code
        out.append({"returncode": rc, "stderr": err.getvalue()})
    return out


if __name__ == "__main__":
    print(json.dumps(run_cases(sys.argv[1], json.loads(sys.argv[2]))))
