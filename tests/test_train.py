"""Training the bundled model: a killed run resumes where it stopped and repeats nothing."""

import pytest
import torch
from safetensors.torch import load_file

from infodecomp.world import train


@pytest.mark.slow
def test_training_resumes_after_a_kill_without_repeating_work(tmp_path, monkeypatch):
    settings = dict(steps=3, batch_size=4, checkpoint_every=1, progress=False)
    straight = train.train_world(tmp_path / "straight", **settings)

    save = train._save_checkpoint

    def save_then_die(folder, step, *args):
        save(folder, step, *args)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.train_world(tmp_path / "killed", **settings)
    monkeypatch.undo()
    # As if killed in the middle of the next save: the whole checkpoint is parked in
    # checkpoint.old and checkpoint.tmp holds a partial write.
    (tmp_path / "killed" / "checkpoint").rename(tmp_path / "killed" / "checkpoint.old")
    (tmp_path / "killed" / "checkpoint.tmp").mkdir()
    (tmp_path / "killed" / "checkpoint.tmp" / "unet.safetensors").write_bytes(b"partial")
    saved = []

    def save_and_count(folder, step, *args):
        saved.append(step)
        save(folder, step, *args)

    monkeypatch.setattr(train, "_save_checkpoint", save_and_count)
    resumed = train.train_world(tmp_path / "killed", **settings)
    assert saved == [3]  # only the step not done before the kill

    files = sorted(p.relative_to(straight) for p in straight.rglob("*.safetensors"))
    assert [str(f.parent) for f in files] == ["text_encoder", "unet"]
    for f in files:
        a, b = load_file(straight / f), load_file(resumed / f)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # Training moved the (moving-average) weights away from the initial ones.
    initial = train.build_pipeline().unet.state_dict()
    trained = load_file(straight / files[1])
    assert any(not torch.equal(initial[k], v) for k, v in trained.items())
