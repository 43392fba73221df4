"""``observe()`` and the Trainer callback hand checkpoints to a watcher process and cost the training loop one save."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer, GPTNeoXForCausalLM

from saetrack import store
from saetrack.live.checkpoints import incomplete_reasons
from saetrack.live.observe import MARKER, Observer, SAETrackCallback, observe, observer_for


def test_a_model_and_a_saved_folder_become_step_folders(smoke_run_dir: Path, tmp_path: Path) -> None:
    model_dir = smoke_run_dir / "model"
    model = GPTNeoXForCausalLM.from_pretrained(str(model_dir / "step0"))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir / "tokenizer"))
    observer = Observer(tmp_path / "watch", watch=False)
    assert observer.observe(model, 0, tokenizer) > 0
    assert observer.observe(model_dir / "step1", 1) > 0
    for step in (0, 1):
        assert incomplete_reasons(tmp_path / "watch" / f"step{step}") == []
    assert (tmp_path / "watch" / "step0" / "tokenizer.json").is_file()
    assert (tmp_path / "watch" / "step1" / "model.safetensors").read_bytes() == (
        model_dir / "step1" / "model.safetensors"
    ).read_bytes()
    assert not list((tmp_path / "watch").glob(".*"))  # no temporary folder left behind
    with pytest.raises(FileExistsError, match="save each step once"):
        observer.observe(model, 1)
    assert observer.finish() is None and (tmp_path / "watch" / MARKER).exists()


def test_the_callback_links_the_trainers_model_files_and_ends_the_watch(smoke_run_dir: Path, tmp_path: Path) -> None:
    saved = tmp_path / "out" / "checkpoint-7"
    saved.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (saved / name).write_bytes((smoke_run_dir / "model" / "step1" / name).read_bytes())
    (saved / "optimizer.pt").write_bytes(b"not for the watcher")
    (saved / "trainer_state.json").write_text("{}")
    callback = SAETrackCallback(watch=False)
    args, state = (
        SimpleNamespace(output_dir=str(tmp_path / "out")),
        SimpleNamespace(global_step=7, is_world_process_zero=True),
    )
    callback.on_save(args, state, None)
    linked = tmp_path / "out" / "saetrack" / "step7"
    assert sorted(p.name for p in linked.iterdir()) == ["config.json", "model.safetensors"]
    assert (linked / "model.safetensors").stat().st_ino == (saved / "model.safetensors").stat().st_ino  # a hard link
    (saved / "model.safetensors").unlink()  # save_total_limit deleting the Trainer's copy does not touch the link
    assert incomplete_reasons(linked) == []
    callback.on_train_end(args, state, None)
    assert (tmp_path / "out" / "saetrack" / MARKER).exists()


def test_observe_starts_a_watcher_that_trains_the_links(smoke_run_dir: Path, tmp_path: Path) -> None:
    model_dir, folder, run_dir = smoke_run_dir / "model", tmp_path / "watch", tmp_path / "run"
    shutil.copytree(model_dir / "tokenizer", folder / "tokenizer")  # the smoke suite keeps it beside the steps
    args = ["--preset", "smoke", "--run-dir", str(run_dir), "--settle", "0.2", "--poll", "0.1"]
    for step in (0, 1):
        observe(model_dir / f"step{step}", step, folder, watch_args=args)
    observer = observer_for(folder)
    assert observer.finish(wait=True, timeout=600) == 0, (folder / "watch.log").read_text()[-3000:]
    assert store.read_manifest(run_dir / "chain")["steps"] == [0, 1]
    assert "[watch] step 1 (link 2)" in (folder / "watch.log").read_text()
