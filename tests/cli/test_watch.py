"""``saetrack watch``: a training run followed while it trains, killed and resumed, equals the offline chain; a
checkpoint copied in slowly is never read early; bad input is one message."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from saetrack import cli, paths
from saetrack.cli import watch_parser
from saetrack.cli.watch import _setup
from saetrack.config.run import RunConfig
from saetrack.data.corpus import prepare_corpus
from saetrack.live.config import watched_config
from saetrack.live.follow import RUN_CONFIG_FILE
from saetrack.stages.cache import cache_activations
from saetrack.stages.chain import train_chain

#: Trains the smoke suite into argv[1], a second's pause after each checkpoint, then marks the run finished.
TRAIN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from saetrack.config import get_preset
    from saetrack.data.corpus import prepare_corpus
    from saetrack.data.suite import train_suite
    run, run_dir = get_preset("smoke"), Path(sys.argv[1])
    prepare_corpus(run, run_dir, progress=False)
    train_suite(run, run_dir, progress=False, on_checkpoint=lambda step, record: time.sleep(1.0))
    (run_dir / "model" / "saetrack.done").touch()
    """
)


def _watch_command(source: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "saetrack", "watch", str(source), "--preset", "smoke", "--run-dir", str(run_dir),
            "--settle", "0.3", "--poll", "0.1", "--idle-timeout", "120", "--quiet", *extra]  # fmt: skip


def _offline_weights(run_dir: Path, offline_dir: Path) -> dict[int, bytes]:
    """The chain of the watched run's final config, trained offline in ``offline_dir``: step -> weight bytes."""
    run = RunConfig.from_dict(json.loads((run_dir / RUN_CONFIG_FILE).read_text()))
    prepare_corpus(run, offline_dir, progress=False)
    cache_activations(run, offline_dir, progress=False)
    train_chain(run, offline_dir, progress=False)
    return {s: (offline_dir / "chain" / f"step{s}" / "sae_weights.safetensors").read_bytes() for s in run.sae_steps}


def _wait_for(path: Path, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_a_training_run_watched_while_it_trains_and_killed_equals_the_offline_chain(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    training = subprocess.Popen([sys.executable, "-c", TRAIN, str(tmp_path / "train")], env=env, cwd=paths.REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    source, watched = tmp_path / "train" / "model", tmp_path / "watched"
    _wait_for(source, training, 600)
    command = _watch_command(source, watched, "--until-step", "8")
    watcher = subprocess.Popen(command, env=env, cwd=paths.REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    _wait_for(watched / "chain" / "step1" / "manifest.json", watcher, 600)
    watcher.send_signal(signal.SIGKILL)  # mid-way: link 3 is being trained or its readings computed
    watcher.wait()
    resumed = subprocess.run(command, env=env, cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "reached --until-step 8" in resumed.stdout
    assert training.wait(timeout=900) == 0, training.communicate()[0][-3000:]
    offline = _offline_weights(watched, tmp_path / "offline")
    assert sorted(offline) == [0, 1, 2, 4, 8]
    for step, weights in offline.items():
        assert (watched / "chain" / f"step{step}" / "sae_weights.safetensors").read_bytes() == weights, step


def _copy_slowly(model_dir: Path, source: Path) -> None:
    """Copy checkpoint 0 at once, then checkpoint 1 with its weights in eight pieces 0.3 s apart, then the marker."""
    shutil.copytree(model_dir / "tokenizer", source / "tokenizer")
    shutil.copytree(model_dir / "step0", source / "step0")
    (source / "step1").mkdir()
    shutil.copy(model_dir / "step1" / "config.json", source / "step1" / "config.json")
    data = (model_dir / "step1" / "model.safetensors").read_bytes()
    with open(source / "step1" / "model.safetensors", "wb") as handle:
        for i in range(8):
            handle.write(data[i * len(data) // 8 : (i + 1) * len(data) // 8])
            handle.flush()
            time.sleep(0.3)
    for name in os.listdir(model_dir / "step1"):
        if not (source / "step1" / name).exists():
            shutil.copy(model_dir / "step1" / name, source / "step1" / name)
    (source / "saetrack.done").touch()


def test_a_checkpoint_copied_in_slowly_is_never_read_before_it_is_complete(smoke_run_dir: Path, tmp_path: Path) -> None:
    source, watched = tmp_path / "source", tmp_path / "watched"
    source.mkdir()
    copier = threading.Thread(target=_copy_slowly, args=(smoke_run_dir / "model", source))
    copier.start()
    code = cli.main(_watch_command(source, watched)[3:])
    copier.join()
    assert code == 0
    offline = _offline_weights(watched, tmp_path / "offline")
    assert sorted(offline) == [0, 1]
    for step, weights in offline.items():
        assert (watched / "chain" / f"step{step}" / "sae_weights.safetensors").read_bytes() == weights, step


def test_bad_input_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["watch", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "is not a folder" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        cli.main(["watch", "hf:no-slash"])
    assert "hf:OWNER/NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["watch", str(tmp_path), "--set", "chain.lr_link=-1"])
    assert "lr_link" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["watch", str(tmp_path), "--explorer-every", "-1"])
    assert "--explorer-every must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["watch", str(tmp_path), "--set", "corpus.source=hf:org/texts"])
    assert "cannot be watched" in capsys.readouterr().err


def test_an_empty_folder_ends_at_the_idle_timeout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["watch", str(tmp_path), "--run-dir", str(tmp_path / "run"), "--poll", "0.05",
                     "--idle-timeout", "0.3", "--preset", "smoke"])  # fmt: skip
    assert code == 0 and "no new checkpoint for" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "restart", "below", "ratio"),
    [
        ((), True, None, 2.0),  # the watch's defaults: the outcome rule on, the carried rule off
        (("--set", "chain.restart_below=0"), True, 0.0, 2.0),
        (("--set", "chain.restart_l0_ratio=None"), False, None, None),  # turned off by hand
        (("--set", "chain.restart_l0_ratio=3"), False, None, 3),
    ],
)
def test_the_continuity_rules_at_their_defaults_unless_set(
    tmp_path: Path, extra: tuple[str, ...], restart: bool, below: float | None, ratio: float | None
) -> None:
    parser = watch_parser(argparse.ArgumentParser())
    args = parser.parse_args([str(tmp_path), "--preset", "smoke", "--run-dir", str(tmp_path / "run"), *extra])
    chain, _ = _setup(args, parser)
    assert chain.restart is restart and chain.base.chain.restart_below == below
    run = watched_config(chain.base, chain.source, [0], (2, 32), "w", restart=chain.restart)
    assert run.chain.restart_l0_ratio == ratio
