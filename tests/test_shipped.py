"""The shipped networks (lemmse_lite/networks/weights): never stale, complete, loaded without training.

A shipped file is used only while its key -- the network's settings and the source of every module its
training can run (zoo.network_key) -- matches today's code. This test fails when it does not, and names
the one command that retrains it."""

import shutil

import pytest
import torch

from lemmse_lite import profiles, store
from lemmse_lite.networks import shipped, training, zoo

FILES = zoo.shipped_files()


def _payload(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state.get("format") == store.CACHE_FORMAT, f"{path.name} is not a store file"
    return state["key"], state["payload"]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_shipped_network_matches_todays_code(path):
    key, payload = _payload(path)
    settings = payload["settings"]
    assert zoo.network_key(settings) == key, (
        f"{path.name} was trained by other code or settings: retrain it with "
        f"`python scripts/ship_networks.py --prune` (it retrains only what is stale)")
    assert path.stem == zoo.network_name(settings, key)
    assert payload["history"]["completed"] == settings["steps"]
    assert sorted(int(s) for s in payload.get("snapshots", {})) == settings.get("snapshots", [])


def test_every_network_of_the_course_is_shipped(monkeypatch):
    monkeypatch.undo()  # the quick profile's real training settings (compile, bfloat16)
    missing = []
    for name, kw in shipped.course_networks(profiles.get_profile("quick")).items():
        settings = zoo.network_settings(profile=profiles.get_profile("quick"), **kw)
        path = zoo.WEIGHTS_DIR / f"{zoo.network_name(settings, zoo.network_key(settings))}.pt"
        if not path.is_file():
            missing.append(name)
    assert not missing, f"not shipped: {missing}; run `python scripts/ship_networks.py --only {' '.join(missing)}`"


def test_shipped_weights_load_without_training_and_retrain_ignores_them(tmp_path, monkeypatch):
    tiny = profiles.get_profile("quick").replace(n_train=8, image_size=16, model_width=4, model_depth=1,
                                                 batch_size=4, train_steps=3)
    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path / "cache"))
    trained = zoo.trained_network("resnet", "denoising", tiny)
    assert trained.source == "trained"
    weights = tmp_path / "weights"
    weights.mkdir()
    for f in (tmp_path / "cache" / "networks").glob("*.pt"):
        shutil.move(f, weights / f.name)  # shipped, and no longer in the cache
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", weights)
    calls = []
    real = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    shipped = zoo.trained_network("resnet", "denoising", tiny)
    assert shipped.source == "shipped" and shipped.from_cache and not calls
    z = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(shipped(z, 0.2), trained(z, 0.2))
    again = zoo.trained_network("resnet", "denoising", tiny, retrain=True)
    assert again.source == "trained" and calls == [1]
