"""The installed commands (pyproject's [project.scripts]) and the README's five-minute tour, run as a
user runs them: from the virtual environment's bin folder, in a folder of their own."""
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent
COMMANDS = ("go2-train", "go2-play", "go2-collect", "go2-export", "go2-bench")


def scripts() -> dict:
    """[project.scripts] of pyproject.toml: {command: module:function}."""
    text = (REPO / "pyproject.toml").read_text()
    table = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', table, re.M))


def command(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} is not installed in {BIN}: pip install -e . installs it"
    return str(path)


def test_every_command_is_declared_and_installed():
    declared = scripts()
    assert set(COMMANDS) <= set(declared)
    for name in declared:
        command(name)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_installed_command_answers_help_under_its_own_name(name, tmp_path):
    r = subprocess.run([command(name), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(f"usage: {name} ")
    if name == "go2-collect":                       # its subcommands are listed
        assert "convert H5 --out NPZ" in r.stdout and "merge PART... --out FILE" in r.stdout
    if name == "go2-train":                         # flags in groups
        for group in ("task:", "run:", "env:", "task options:", "PPO:", "logging:"):
            assert f"\n{group}\n" in r.stdout


def test_the_original_underscore_flags_still_parse(tmp_path):
    r = subprocess.run([command("go2-train"), "--num_envs", "8", "--exp_name", "old", "--max_iterations", "3",
                        "--xml_path", str(REPO / "Unitree_go2" / "go2_mjx_gym.xml"), "--print-config"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    (stage,) = json.loads(r.stdout)["stages"]
    assert stage["flags"]["num_envs"] == 8 and stage["flags"]["max_iterations"] == 3
    assert stage["folder"] == os.path.join("logs", "old")          # under the working directory
    r = subprocess.run([command("go2-play"), "--num_envs", "0"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("go2-play: error:") and r.stderr.count("\n") == 1


def tour() -> list[str]:
    """The commands of the README's "Five minutes" block, one per line, comments dropped."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Five minutes", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What each tour command gets appended to run in seconds: later flags win in argparse.
BUDGET = {
    "go2-collect": ["--episodes", "2", "-B", "2", "--duration", "1"],
    "go2-train": ["-B", "8", "--max-iterations", "1", "--backend", "mujoco", "--device", "cpu"],
    "go2-play": ["-B", "2", "--duration", "1", "--no-progress"],
    "python": ["--duration", "1"],
}


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    """Each command of the tour, as the README writes it, with a short budget appended; the viewer
    is opened, asked for its page, and stopped with Ctrl-C."""
    lines = tour()
    assert lines[0].startswith("pip install")           # the install line: this environment has it
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for line in lines[1:]:
        argv = shlex.split(line)
        if argv[0] == "python":
            argv = [sys.executable, str(REPO / argv[1]), *argv[2:]]
            name = "python"
        else:
            name = argv[0]
            argv[0] = command(name)
        if "--viewer" in argv:
            port = free_port()
            proc = subprocess.Popen([*argv, "--port", str(port), "-B", "1"], cwd=tmp_path, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.time() + 600
            while True:
                assert proc.poll() is None, proc.stdout.read()[-2000:]
                assert time.time() < deadline, "the viewer did not serve its page in 10 min"
                try:
                    import urllib.request
                    page = urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=5).read()
                    break
                except OSError:
                    time.sleep(1)
            assert page
            time.sleep(3)
            proc.send_signal(signal.SIGINT)
            out = proc.communicate(timeout=300)[0]
            assert proc.returncode == 0, out[-2000:]
            continue
        r = subprocess.run([*argv, *BUDGET.get(name, [])], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=1200)
        assert r.returncode == 0, f"{line}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    # what the tour promises it leaves behind
    assert (tmp_path / "walk.npz").is_file() and (tmp_path / "logs" / "my-walker" / "go2_walk.pt").is_file()
    assert (tmp_path / "my_walker.onnx").is_file()
