"""What a training checkpoint holds and how it is put back (``CheckpointManager.save_training``
and ``resume``): the loop relies on these alone to continue exactly where it stopped."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from snowtrain.trainer.checkpoint import CheckpointManager, Trainables, TrainState


def parts(*, frozen_base: bool = False) -> Trainables:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    if frozen_base:  # adapters: only the head trains
        model[0].requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return Trainables(model, optimizer, scheduler, scaler=None)


def step(trained: Trainables) -> None:
    trained.model(torch.ones(3, 4)).sum().backward()
    trained.optimizer.step()
    trained.scheduler.step()


def test_a_resumed_run_gets_back_weights_optimizer_schedule_and_position(tmp_path):
    trained = parts()
    step(trained)
    state = TrainState(step=1, epoch=2, position=3, tokens_trained=40, fingerprint="sha256:ab")
    path = CheckpointManager(tmp_path).save_training(state, trained, total_steps=9)
    assert path.name == "step-00000001"

    fresh = parts()
    resumed = CheckpointManager(tmp_path).resume(fresh, restore_generators=True)
    assert resumed == state
    for a, b in zip(trained.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert fresh.scheduler.get_last_lr() == trained.scheduler.get_last_lr()
    assert fresh.optimizer.state_dict()["state"][0]["step"] == 1


def test_no_checkpoint_resumes_nothing(tmp_path):
    assert CheckpointManager(tmp_path).resume(parts(), restore_generators=True) is None


def test_a_frozen_base_is_not_saved_and_need_not_be_in_the_checkpoint(tmp_path):
    trained = parts(frozen_base=True)
    step(trained)
    ckpt = CheckpointManager(tmp_path)
    ckpt.save_training(TrainState(step=1), trained, total_steps=2)
    assert set(ckpt.load(ckpt.latest())["model"]) == {"1.weight", "1.bias"}
    assert ckpt.resume(parts(frozen_base=True), restore_generators=False) == TrainState(step=1)


def test_checkpoints_written_with_the_old_extra_field_still_resume(tmp_path):
    """``TrainState.extra`` (always empty) was dropped; checkpoints that carry it resume."""
    trained = parts()
    ckpt = CheckpointManager(tmp_path)
    ckpt.save_training(TrainState(step=4), trained, total_steps=8)
    payload = ckpt.load(ckpt.latest())
    payload["train_state"] = {**asdict(TrainState(step=4)), "extra": {}}
    ckpt.save(4, payload)
    assert ckpt.resume(parts(), restore_generators=False) == TrainState(step=4)
