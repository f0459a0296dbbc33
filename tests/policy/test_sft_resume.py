"""Resumable `svrl sft` / `svrl pretrain`: a killed run continues to exactly the weights of an uninterrupted one,
and an output directory is never silently reused or replaced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import svrl_trainer.sft as sft
from svrl.cli import main as svrl_main
from svrl_policy.policy import Policy
from svrl_trainer.sft import SFTConfig, train_sft
from svrl_trainer.sft_state import ResumeMismatchError, RunExistsError, read_state


def _config(data: Path, out: Path, **kw) -> SFTConfig:
    base = dict(data=[data], out=out, preset="debug", steps=12, batch_size=8, lr=2e-3, warmup_steps=3,
                log_every=5, save_every=4, progress=False)  # fmt: skip
    return SFTConfig(**{**base, **kw})


def _crash_at(monkeypatch: pytest.MonkeyPatch, crash_step: int) -> None:
    """Interrupt train_sft (as Ctrl-C would) when it reaches `crash_step`."""
    real_lr_at = sft.lr_at

    def lr_at(step: int, cfg: SFTConfig) -> float:
        if step == crash_step:
            raise KeyboardInterrupt
        return real_lr_at(step, cfg)

    monkeypatch.setattr(sft, "lr_at", lr_at)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return Policy.from_pretrained(ckpt).model.state_dict()


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_interrupted_run_resumes_to_the_uninterrupted_weights(
    reach_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = train_sft(_config(reach_dataset, tmp_path / "whole"))
    assert read_state(whole.checkpoint)["finished"] is True
    assert not (whole.checkpoint / "optimizer.safetensors").exists()  # dropped from the final checkpoint

    _crash_at(monkeypatch, 10)  # after the states of steps 4 and 8, mid-way through a logging window
    with pytest.raises(KeyboardInterrupt):
        train_sft(_config(reach_dataset, tmp_path / "cut"))
    state = read_state(tmp_path / "cut")
    assert state["step"] == 8 and state["finished"] is False
    assert (tmp_path / "cut" / "optimizer.safetensors").is_file()

    monkeypatch.undo()
    resumed = train_sft(_config(reach_dataset, tmp_path / "cut", resume=True))
    _assert_same_weights(whole.checkpoint, resumed.checkpoint)
    assert resumed.history == whole.history  # losses, accuracies and learning rates of every logged step


def test_stop_after_cuts_a_run_that_resume_finishes_to_the_uninterrupted_weights(
    reach_dataset: Path, tmp_path: Path
) -> None:
    """`--stop-after` is how a recipe takes a stage at a named step, and how a run outlives a session."""
    whole = train_sft(_config(reach_dataset, tmp_path / "whole"))
    out = tmp_path / "pieces"
    first = train_sft(_config(reach_dataset, out, stop_after=7))  # not a multiple of save_every
    assert first.stopped
    state = read_state(out)
    assert state["step"] == 7 and state["finished"] is False
    assert Policy.from_pretrained(out).config is not None  # a usable checkpoint at step 7
    again = train_sft(_config(reach_dataset, out, resume=True, stop_after=7))  # already there: no step
    assert again.stopped and read_state(out)["step"] == 7
    last = train_sft(_config(reach_dataset, out, resume=True))  # stop_after is not a parameter of the run
    assert not last.stopped and read_state(out)["finished"] is True
    _assert_same_weights(whole.checkpoint, last.checkpoint)
    assert last.history == whole.history


def test_resume_from_scratch_and_of_a_finished_run(reach_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train_sft(_config(reach_dataset, out, resume=True, steps=5))  # nothing there yet: starts at 0
    assert read_state(out)["step"] == 5
    before = (out / "model.safetensors").stat().st_mtime_ns
    again = train_sft(_config(reach_dataset, out, resume=True, steps=5))
    assert again.history == first.history
    assert (out / "model.safetensors").stat().st_mtime_ns == before  # nothing was retrained or rewritten


def test_output_of_another_run_is_refused_without_resume_or_overwrite(
    reach_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train_sft(_config(reach_dataset, out, steps=3))
    with pytest.raises(RunExistsError, match="--resume"):
        train_sft(_config(reach_dataset, out, steps=3))
    with pytest.raises(ResumeMismatchError, match="lr"):
        train_sft(_config(reach_dataset, out, steps=3, lr=1e-3, resume=True))
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="something else"):
        train_sft(_config(reach_dataset, other, steps=3))
    with pytest.raises(RunExistsError, match="not deleting"):  # --overwrite deletes only what svrl wrote
        train_sft(_config(reach_dataset, other, steps=3, overwrite=True))
    assert (other / "notes.txt").read_text() == "mine"
    replaced = train_sft(_config(reach_dataset, out, steps=4, overwrite=True))
    assert read_state(replaced.checkpoint)["step"] == 4
    argv = ["sft", "--data", str(reach_dataset), "--preset", "debug", "--out", str(out), "--steps", "3"]
    assert svrl_main(argv) == 2  # a one-line refusal, not a traceback


def test_resume_finds_the_state_when_killed_between_the_two_renames(
    reach_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = train_sft(_config(reach_dataset, tmp_path / "whole"))
    out = tmp_path / "cut"
    _crash_at(monkeypatch, 6)  # the state of step 4 is saved
    with pytest.raises(KeyboardInterrupt):
        train_sft(_config(reach_dataset, out))
    monkeypatch.undo()
    out.rename(tmp_path / ".cut.old-1234abcd")  # as atomic_directory leaves it between its renames
    resumed = train_sft(_config(reach_dataset, out, resume=True))
    _assert_same_weights(whole.checkpoint, resumed.checkpoint)


def test_sigkilled_cli_run_resumes_to_the_uninterrupted_weights(reach_dataset: Path, tmp_path: Path) -> None:
    args = ["sft", "--data", str(reach_dataset), "--preset", "debug", "--steps", "400", "--batch-size", "8",
            "--save-every", "5", "--threads", "1", "--log-every", "100"]  # fmt: skip
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert svrl_main([*args, "--out", str(whole)]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "svrl.cli", *args, "--out", str(cut)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        while not (cut / "trainer_state.json").exists():  # the first state (step 5) is in place
            assert proc.poll() is None, "the run ended before its first state was saved"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    state = json.loads((cut / "trainer_state.json").read_text())
    assert not state["finished"] and 5 <= state["step"] < 400, state["step"]  # killed mid-run
    assert svrl_main([*args, "--out", str(cut), "--resume"]) == 0
    _assert_same_weights(whole, cut)
    assert read_state(cut)["finished"] is True


def test_a_run_recorded_before_a_parameter_existed_resumes_with_its_default(
    reach_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weeks-long pretraining outlives releases: a new SFTConfig field must not orphan a run it never used."""
    out = tmp_path / "cut"
    _crash_at(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        train_sft(_config(reach_dataset, out))
    monkeypatch.undo()
    state_path = out / "trainer_state.json"
    state = json.loads(state_path.read_text())
    del state["config"]["label_sigma"]  # as written by svrl before soft labels existed
    state_path.write_text(json.dumps(state))
    with pytest.raises(ResumeMismatchError, match="label_sigma"):  # a non-default value is another run
        train_sft(_config(reach_dataset, out, resume=True, label_sigma=2.0))
    resumed = train_sft(_config(reach_dataset, out, resume=True))
    assert read_state(resumed.checkpoint)["step"] == 12
