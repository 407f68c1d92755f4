"""train.py --logger wandb: an offline run writes its W&B run directory; without wandb or without a
key, one line."""
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow   # a whole training run; the default group keeps the logger's one-line errors
def test_wandb_offline_writes_a_run_directory(tmp_path):
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--device", "cpu", "--num_envs", "8",
                        "--max_iterations", "1", "-e", "wb", "--logger", "wandb", "--wandb-project", "go2-test",
                        "--log_root", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    log_dir = tmp_path / "wb"
    (run,) = (log_dir / "wandb").glob("offline-run-*")
    (data,) = run.glob("run-*.wandb")
    blob = data.read_bytes()
    assert len(blob) > 1000
    for text in (b"go2-test", b"Loss/surrogate", b"action_scale"):    # project, a scalar, the env config
        assert text in blob, text
    assert (run / "files" / "model_0.pt").exists()                       # the checkpoint, by its final name
    assert not list(run.glob("files/.model_*"))
    assert (log_dir / "model_0.pt").is_file() and list(log_dir.glob("events.out.tfevents.*"))
    assert not (tmp_path / "wandb").exists()                             # nothing in the working directory


def test_missing_wandb_is_one_line(tmp_path, monkeypatch, capsys):
    import train
    monkeypatch.setitem(sys.modules, "wandb", None)                      # import wandb -> ImportError
    rc = train.main(["--device", "cpu", "--num_envs", "8", "--max_iterations", "1", "--logger", "wandb",
                     "--log_root", str(tmp_path)])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "train.py: error: --logger wandb needs the wandb package: pip install -e '.[wandb]' "
        "(or use --logger tensorboard)"]
    assert not list(tmp_path.iterdir())


def test_unknown_logger_is_one_line(tmp_path, capsys):
    import train
    assert train.main(["--logger", "neptune", "--log_root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "train.py: error: unknown --logger 'neptune': choose tensorboard or wandb"


def test_wandb_without_a_key_is_one_line_before_the_env(tmp_path):
    """No API key (a fresh HOME, no WANDB_API_KEY) and an online run: refused in one line before
    the env is built, so nothing is written; WANDB_MODE=offline needs no key (test above)."""
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"))
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--device", "cpu", "--num_envs", "8",
                        "--max_iterations", "1", "--logger", "wandb", "--log_root", str(tmp_path / "logs")],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = r.stderr.strip().splitlines()          # wandb's own first line in the middle (0.31: "No API key ...")
    assert line.startswith("train.py: error: --logger wandb: ") and "key" in line.lower()
    assert line.endswith("(or set WANDB_MODE=offline to log on this machine only, or use --logger tensorboard)")
    assert not (tmp_path / "logs").exists()
