"""train(): loss decreases, kill-and-resume is exact, checkpoints are atomic and guarded."""

import os

import pytest
import torch

from lemmse_lite.models import LocalResNet, LocalUNet
from lemmse_lite.training import CheckpointError, load_checkpoint, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is much faster than two on a loaded 2-core runner."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _images(n=8, size=16):
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


def _model():
    torch.manual_seed(1)
    return LocalResNet(patch_size=3, channels=1, width=8, depth=1)


KW = {
    "sigma_range": (0.1, 0.3),
    "steps": 20,
    "batch_size": 4,
    "lr": 1e-2,
    "checkpoint_every": 10,
    "log_every": 3,
    "progress": False,
}


class Identity:
    """A pre-inverse that can simulate a crash after ``fail_after`` calls."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, y):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        return y


def test_short_run_lowers_the_loss():
    hist = train(
        _model(),
        _images(),
        None,
        None,
        (0.2, 0.3),
        steps=80,
        batch_size=8,
        lr=1e-2,
        log_every=10,
        progress=False,
    )
    assert hist.step == list(range(10, 81, 10)) and hist.completed == 80
    assert hist.loss[-1] < 0.7 * hist.loss[0]
    assert len(hist.lr) == len(hist.time) == 8 and hist.lr[-1] < max(hist.lr)
    assert not hist.model.training


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    ref_model = _model()
    ref = train(ref_model, _images(), None, Identity(), checkpoint=tmp_path / "ref.pt", **KW)

    # planned interruption: stop at step 10 (schedule of 20 kept), then resume
    m = _model()
    part = train(m, _images(), None, Identity(), checkpoint=tmp_path / "a.pt", until=10, **KW)
    assert part.completed == 10
    m = _model()
    done = train(m, _images(), None, Identity(), checkpoint=tmp_path / "a.pt", resume=True, **KW)
    assert (done.step, done.loss, done.lr) == (ref.step, ref.loss, ref.lr)
    assert _same_weights(m, ref_model)

    # a real crash at step 15 (after the checkpoint of step 10), then resume
    with pytest.raises(KeyboardInterrupt):
        train(
            _model(),
            _images(),
            None,
            Identity(fail_after=1 + 15),  # +1: fingerprint probe
            checkpoint=tmp_path / "b.pt",
            **KW,
        )
    assert load_checkpoint(tmp_path / "b.pt")["history"]["completed"] == 10
    m = _model()
    done = train(m, _images(), None, Identity(), checkpoint=tmp_path / "b.pt", resume=True, **KW)
    assert (done.step, done.loss, done.lr) == (ref.step, ref.loss, ref.lr)
    assert _same_weights(m, ref_model)
    assert sorted(os.listdir(tmp_path)) == ["a.pt", "b.pt", "ref.pt"]  # no temp files left


def test_mismatched_checkpoint_is_refused_and_untouched(tmp_path):
    path = tmp_path / "run.pt"
    train(_model(), _images(), checkpoint=path, **KW)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"run\.pt.*lr: checkpoint 0\.01 vs now 0\.02"):
        train(_model(), _images(), checkpoint=path, resume=True, **{**KW, "lr": 2e-2})
    with pytest.raises(CheckpointError, match="different run.*model"):
        train(LocalUNet(3, width=8, depth=1), _images(), checkpoint=path, resume=True, **KW)
    with pytest.raises(CheckpointError, match="already exists"):
        train(_model(), _images(), checkpoint=path, **KW)
    assert path.read_bytes() == before
    train(_model(), _images(), checkpoint=path, overwrite=True, **{**KW, "steps": 5})
    assert load_checkpoint(path)["history"]["completed"] == 5


@pytest.mark.parametrize("content", [b"not a checkpoint", "truncated"])
def test_corrupt_checkpoint_gives_clear_error(tmp_path, content):
    path = tmp_path / "run.pt"
    if content == "truncated":
        train(_model(), _images(), checkpoint=path, **{**KW, "steps": 2})
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"run\.pt is unreadable.*untouched"):
        train(_model(), _images(), checkpoint=path, resume=True, **KW)
    torch.save({"some": "dict"}, path)
    with pytest.raises(CheckpointError, match="not a lemmse_lite training checkpoint"):
        train(_model(), _images(), checkpoint=path, resume=True, **KW)
    content = path.read_bytes()
    with pytest.raises(CheckpointError):
        train(_model(), _images(), checkpoint=path, **KW)  # resume=False never overwrites
    assert path.read_bytes() == content


def test_bad_arguments():
    with pytest.raises(ValueError, match="sigma_range"):
        train(_model(), _images(), sigma_range=(0.3, 0.1), steps=2, progress=False)
    with pytest.raises(ValueError, match="until"):
        train(_model(), _images(), steps=4, until=2, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        train(_model(), torch.rand(4, 3, 8, 8), steps=2, progress=False)
    with pytest.raises(ValueError, match="amp"):
        train(_model(), _images(), steps=2, amp=True, device="cpu", progress=False)
