"""experiments: the network cache (keys, atomic writes, reuse), agreement rows (course/07, eq-agreement),
the README table. Tiny settings: each test takes seconds on one thread."""

import json

import pytest
import torch

from lemmse_lite import experiments, profiles, store
from lemmse_lite.experiments import controls
from lemmse_lite.networks import training, zoo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny():
    return profiles.get_profile("quick").replace(
        n_train=12, n_test=2, image_size=16, train_steps=4, sweep_steps=4, model_width=6,
        sweep_width=6, model_depth=1, batch_size=4, chunk_size=12, device="cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(experiments.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def count_train(monkeypatch):
    calls = []
    real = training.train

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train", counting)
    return calls


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv(experiments.CACHE_ENV, str(tmp_path / "here"))
    assert experiments.cache_dir() == tmp_path / "here"
    monkeypatch.delenv(experiments.CACHE_ENV)
    default = experiments.cache_dir()
    assert default.name == ".lemmse_cache"
    assert experiments.cache_dir(tmp_path) == tmp_path


def test_key_changes_with_every_setting_and_the_code(tiny, monkeypatch):
    base = experiments.network_settings("resnet", "denoising", tiny)
    key = zoo.network_key(base)
    assert key == zoo.network_key(dict(base))  # deterministic
    changed = {"family": "unet", "problem": "inpainting", "pre_inverse": "pinv", "patch_size": 3,
               "dataset": "faces", "image_size": 32, "n_train": 13, "steps": 5, "width": 7,
               "depth": 2, "batch_size": 8, "lr": 1e-3, "sigma_range": [0.1, 0.2], "seed": 1,
               "device": "cuda"}
    assert set(changed) == set(base), "every setting is covered by this test"
    optional = {"offset": 12, "snapshots": [2], "crop": 8, "compile": True, "amp": True}
    keys = {zoo.network_key({**base, k: v}) for k, v in {**changed, **optional}.items()}
    assert len(keys) == len(changed) + len(optional) and key not in keys
    # the optional settings reach the key when set
    assert experiments.network_settings("resnet", "denoising", tiny, offset=12, snapshots=(2,))["offset"] == 12
    # the profile fields reach the settings
    assert experiments.network_settings("resnet", "denoising", tiny.replace(lr=1e-4))["lr"] == 1e-4
    # a changed source file or version changes the key
    monkeypatch.setattr(store, "source_hash", lambda roots, folder=None: "edited")
    assert zoo.network_key(base) != key
    monkeypatch.undo()
    monkeypatch.setattr(store, "__version__", "9.9.9")
    assert zoo.network_key(base) != key


def test_cached_network_is_reused_not_retrained(tiny, cache, count_train):
    first = experiments.trained_network("resnet", "denoising", tiny)
    assert len(count_train) == 1 and not first.from_cache
    again = experiments.trained_network("resnet", "denoising", tiny)
    assert len(count_train) == 1 and again.from_cache
    assert again.history == first.history and again.history["completed"] == tiny.train_steps
    z = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(z, 0.2), first(z, 0.2))
    experiments.trained_network("resnet", "denoising", tiny, steps=5)  # another setting: trains
    assert len(count_train) == 2
    assert not list(cache.rglob("*.ckpt"))  # checkpoints of finished runs are removed


def test_interrupted_write_is_never_read(tiny, cache, count_train, monkeypatch):
    real_save = torch.save

    def torn(obj, f, *a, **k):  # the cache write: write half a file, then die
        real_save(obj, f, *a, **k)
        if not (isinstance(obj, dict) and obj.get("format") == store.CACHE_FORMAT):
            return
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        experiments.trained_network("resnet", "denoising", tiny)
    monkeypatch.setattr(torch, "save", real_save)
    assert len(count_train) == 1  # it trained, then the cache write was cut
    assert not list((cache / "networks").glob("*.pt"))  # no torn file under the final name
    net = experiments.trained_network("resnet", "denoising", tiny)
    assert not net.from_cache
    # a corrupt final file (e.g. a disk error) is ignored and replaced, never loaded
    (path,) = (cache / "networks").glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])
    again = experiments.trained_network("resnet", "denoising", tiny)
    assert not again.from_cache and experiments.trained_network("resnet", "denoising", tiny).from_cache


def test_agreement_rows_have_the_controls(tiny, cache):
    nets = {f: experiments.trained_network(f, "denoising", tiny) for f in ("resnet", "unet")}
    rows, _ = experiments.agreement(nets, "denoising", tiny, controls=True, sigmas=(0.2,))
    assert len(rows) == 2 * 2  # networks x splits
    res = next(r for r in rows if r["network"] == "resnet")
    unet = next(r for r in rows if r["network"] == "unet")
    assert res["reference"] == "LE-MMSE(5)"
    assert set(res["controls"]) == {"LE-MMSE(3)", "LE-MMSE(7)", "MMSE", "E-MMSE", "truth"}
    assert unet["reference"] == "sub-lattice(5, measured)"
    assert set(unet["controls"]) == {"LE-MMSE(5)", "LE-MMSE(3)", "sub-lattice(5, full)", "MMSE",
                                     "E-MMSE", "truth"}
    for r in rows:
        best = max(r["controls"].values())
        assert r["controls"][r["best_control"]] == best
        assert r["margin"] == pytest.approx(r["psnr_net_ref"] - best)
        assert r["controls"]["truth"] == r["psnr_net_x"]
        assert r["split"] in ("train", "test") and r["n"] == tiny.n_test
    # the reference estimates are cached per measurement: a second call computes nothing new
    n_files = len(list((cache / "estimates").glob("*.pt")))
    again, _ = experiments.agreement(nets, "denoising", tiny, controls=True, sigmas=(0.2,))
    assert again == rows and len(list((cache / "estimates").glob("*.pt"))) == n_files
    plain, _ = experiments.agreement(nets, "denoising", tiny, controls=False, sigmas=(0.2,), splits=("test",))
    assert all("controls" not in r and r["split"] == "test" for r in plain)
    assert "margin" in experiments.margins_table(rows)


def test_results_table_in_the_readme(tiny, cache, tmp_path):
    rows = [{"network": "resnet", "family": "LocalResNet", "problem": "denoising", "setting": "white noise",
             "n_train": 12, "steps": 4, "pre_inverse": "none", "train_data": "photos", "test_data": "photos", "patch_size": 5, "split": s, "sigma": g,
             "n": 2, "reference": "LE-MMSE(5)", "psnr_net_ref": 30.0 + k, "psnr_net_x": 20.0,
             "psnr_ref_x": 21.0, "margin": 1.25} for k, (s, g) in enumerate([("train", 0.2), ("test", 0.2)])]
    path = experiments.save_results("agreement-denoising", rows, tiny)
    assert json.loads(path.read_text())["rows"] == rows
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\ntext\n")
    table = experiments.write_results_table(readme, experiments.load_results())
    text = readme.read_text()
    assert text.startswith("# Title\n\ntext\n") and "## Networks against the theory (generated)" in text
    assert "| quick | denoising: white noise; photos | none | LocalResNet | 12 | 5 | 4 | LE-MMSE(5) | – / – | 30.0 / 31.0 | 1.2 |" in table
    assert "10,000" in table and "15×15" in table  # the paper's settings beside ours
    readme.write_text(text + "\nafter\n")
    experiments.write_results_table(readme, {})  # rewrites between the markers only
    text2 = readme.read_text()
    assert text2.count(experiments.README_BEGIN) == 1 and text2.endswith("after\n")
    assert "LocalResNet" not in text2


def test_flat_rows_share_columns_when_the_first_row_lacks_one():
    """A row without P_eff (training measurements) before one with it: every flat row has the
    column, empty where the row lacks it, in the table's fixed order."""
    base = {"network": "n", "sigma": 0.05, "psnr_net_ref": 30.0, "psnr_net_ref_ci": (29.0, 31.0)}
    flat = controls.flat_rows([{**base, "split": "train"}, {**base, "split": "test", "p_eff": 3}])
    assert [list(f) for f in flat] == [["network", "split", "sigma", "PSNR(net, ref)", "P_eff"]] * 2
    assert [f["P_eff"] for f in flat] == ["", 3]
