"""train() and its pieces (TrainConfig, TrainState, train_step, run folders): loss decreases, kill-and-resume is exact, checkpoints are atomic and guarded."""

import json
import os

import pytest
import torch

from lemmse_lite.networks.models import LocalResNet, LocalUNet
from lemmse_lite.networks.training import (
    CheckpointError,
    TrainConfig,
    TrainState,
    load_checkpoint,
    load_run,
    sample_batch,
    save_run,
    train,
    train_step,
)
from lemmse_lite.operators import measure

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is much faster


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
KW_CONFIG = {k: v for k, v in KW.items() if k != "progress"}


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
    with pytest.raises(ValueError, match="crop"):
        train(_model(), _images(), steps=2, crop=4, progress=False)  # smaller than P + 2
    with pytest.raises(ValueError, match="crop"):
        train(_model(), _images(), steps=2, crop=0, progress=False)

    with pytest.raises(ValueError, match="sigma_range"):
        train(_model(), _images(), sigma_range=(0.0, 0.1), steps=2, progress=False)  # sigma > 0


def test_config_is_frozen_validated_and_overrides_are_checked():
    cfg = TrainConfig(steps=40)
    with pytest.raises(Exception):
        cfg.steps = 3  # frozen
    r = cfg.resolved()
    assert (r.warmup, r.log_every, r.device) == (2, 1, "cpu") and r.amp is False
    assert r.hyper()["sigma_range"] == [0.05, 0.3]
    for bad in ({"steps": 0}, {"batch_size": -1}, {"lr": 0.0}, {"ema": 1.0}, {"warmup": -1},
                {"sigma_range": (0.1, float("nan"))}, {"log_every": 0}):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            TrainConfig(**bad)
    with pytest.raises(TypeError, match="unknown argument.*bogus.*valid names"):
        train(_model(), _images(), steps=2, bogus=1, progress=False)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train(_model(), _images(), config={"steps": 2}, progress=False)


def test_config_object_equals_keyword_arguments():
    """train(config=TrainConfig(...)) and the keyword form are the same run."""
    a, b = _model(), _model()
    ha = train(a, _images(), config=TrainConfig(**KW_CONFIG), progress=False)
    hb = train(b, _images(), **KW_CONFIG, progress=False)
    assert ha.loss == hb.loss and _same_weights(a, b)


def test_train_step_matches_the_formula():
    """One step by hand: the noise is operators.measure's with the state's generator, the loss is
    mean (N(z, sigma) - x)^2 of eq-training-loss, evaluated before the update."""
    cfg = TrainConfig(sigma_range=(0.1, 0.2), steps=5, batch_size=4, ema=0, clip=None).resolved()
    model, images = _model(), _images()
    state = TrainState.create(model, cfg)
    twin = TrainState.create(_model(), cfg)  # same weights, same generator seed
    x = sample_batch(state, images, cfg)
    idx = torch.randint(images.shape[0], (4,), generator=twin.generator)
    assert torch.equal(x, images[idx])
    sigma = 0.1 + 0.1 * torch.rand(4, generator=twin.generator)
    y = measure(None, x, sigma, twin.generator)
    with torch.no_grad():
        expected = float(((twin.model(y, sigma) - x) ** 2).mean())
    loss = train_step(state, x, None, None, cfg)
    assert abs(float(loss) - expected) < 1e-6
    assert state.history.completed == 1 and state.n_steps == 1
    assert not _same_weights(state.model, twin.model)  # the optimiser stepped


def test_state_dict_round_trip():
    cfg = TrainConfig(steps=6, batch_size=4).resolved()
    images = _images()
    a = TrainState.create(_model(), cfg)
    for _ in range(3):
        train_step(a, sample_batch(a, images, cfg), None, None, cfg)
    b = TrainState.create(_model(), cfg)
    b.load_state_dict(a.state_dict())
    for s in (a, b):
        for _ in range(3):
            train_step(s, sample_batch(s, images, cfg), None, None, cfg)
    assert _same_weights(a.model, b.model) and _same_weights(a.ema_model, b.ema_model)
    assert float(a.loss_sum) == float(b.loss_sum) and b.history.completed == 6


def test_run_folder_round_trip(tmp_path):
    model = _model()
    hist = train(model, _images(), steps=3, batch_size=4, progress=False)
    save_run(tmp_path / "run", model, hist, {"problem": "denoising"})
    back, meta = load_run(tmp_path / "run")
    assert meta["problem"] == "denoising" and meta["config"]["family"] == "LocalResNet"
    assert _same_weights(back, model) and not back.training
    assert json.loads((tmp_path / "run" / "history.json").read_text())["history"]["completed"] == 3
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a usable lemmse_lite run"):
        load_run(tmp_path / "bad")
