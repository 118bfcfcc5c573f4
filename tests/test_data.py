"""Tests of lemmse_lite.data on files the tests write (no network) and on the embedded sets."""

import pickle
import struct
import time
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from lemmse_lite import data
from lemmse_lite.data import DatasetUnavailableError, ImageReadError

# ------------------------------------------------------------------ torchvision on-disk formats


def _write_idx(path, array: np.ndarray) -> None:
    """Write uint8 ``array`` in the idx-ubyte format (magic 0x0000 08 ndim, big-endian dims)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, folder, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    images = {
        s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for s, n in (("train", n_train), ("t10k", n_test))
    }
    raw = root / folder / "raw"
    for prefix, array in images.items():
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", array)
        _write_idx(
            raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, len(array), dtype=np.uint8)
        )
    return images


def _write_cifar(root, per_batch=3, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": n_test}
    written = {}
    for name, n in batches.items():
        array = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": array, "labels": [0] * n, "batch_label": name}, f)
        written[name] = array.reshape(n, 3, 32, 32)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return written


@pytest.mark.parametrize("name,folder", [("fashionmnist", "FashionMNIST"), ("mnist", "MNIST")])
def test_mnist_family_from_torchvision_raw_files(tmp_path, name, folder):
    images = _write_mnist(tmp_path, folder)
    x = data.load(name, "train", root=tmp_path, download=False, seed=None)
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.from_numpy(images["train"]).float() / 255)
    test = data.load(name, "test", root=tmp_path, download=False, seed=None)
    assert torch.equal(test[:, 0], torch.from_numpy(images["t10k"]).float() / 255)
    # the layout is torchvision's own: its dataset class reads the same files
    import torchvision.datasets as tvd

    reference = getattr(tvd, {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}[name])(tmp_path)
    assert torch.equal(reference.data, torch.from_numpy(images["train"]))


def test_mnist_options_order_size_colour_sources(tmp_path):
    _write_mnist(tmp_path, "FashionMNIST")
    full = data.load("fashionmnist", "train", root=tmp_path, download=False, seed=3)
    first, sources = data.load(
        "fashionmnist", "train", n=5, root=tmp_path, download=False, seed=3, return_sources=True
    )
    assert torch.equal(first, full[:5])
    natural = data.load("fashionmnist", "train", root=tmp_path, download=False, seed=None)
    index = [int(s.split("[")[1].rstrip("]")) for s in sources]
    assert sources[0].startswith("fashionmnist:train[") and torch.equal(first, natural[index])
    small = data.load("fashionmnist", "test", root=tmp_path, download=False, size=16, grey=False)
    assert small.shape == (5, 3, 16, 16) and 0 <= small.min() and small.max() <= 1
    assert torch.equal(small[:, 0], small[:, 2])


def test_env_variable_sets_the_root(tmp_path, monkeypatch):
    _write_mnist(tmp_path, "MNIST", n_train=7)
    monkeypatch.setenv("LEMMSE_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    assert data.load("mnist", "train", download=False).shape == (7, 1, 28, 28)


def test_cifar10_from_python_batches(tmp_path):
    written = _write_cifar(tmp_path)
    x = data.load("cifar10", "train", root=tmp_path, download=False, seed=None)
    expected = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)])
    assert x.shape == (15, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(expected).float() / 255)
    grey = data.load("cifar10", "test", root=tmp_path, download=False, grey=True)
    assert grey.shape == (4, 1, 32, 32)


def test_cifar10_offline_without_files_is_a_clear_fast_error(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as info:
        data.load("cifar10", "train", root=tmp_path, download=False)
    message = str(info.value)
    assert "data_batch_1" in message and str(tmp_path) in message and "photos" in message
    assert isinstance(info.value, FileNotFoundError)
    assert time.perf_counter() - start < 5


def test_failed_download_becomes_the_clear_error(tmp_path, monkeypatch):
    def offline(name, root):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(data, "_download", offline)
    for name, expected in (("cifar10", "test_batch"), ("fashionmnist", "t10k-images-idx3-ubyte")):
        with pytest.raises(DatasetUnavailableError, match="download failed") as info:
            data.load(name, "test", root=tmp_path)
        assert expected in str(info.value) and info.value.__cause__ is None


def test_present_files_are_not_downloaded(tmp_path, monkeypatch):
    _write_mnist(tmp_path, "MNIST")

    def forbidden(name, root):
        raise AssertionError("download attempted although the files exist")

    monkeypatch.setattr(data, "_download", forbidden)
    assert data.load("mnist", "test", root=tmp_path, download=True).shape == (5, 1, 28, 28)


# ------------------------------------------------------------------ image folders


def _write_folder(folder):
    """Five images of odd sizes and kinds; sorted order: a_grey, b_rgb, c_jpeg, d/e_bmp, f_grey16."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    grey = rng.integers(0, 256, (45, 37), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(folder / "a_grey.png")
    Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)).save(folder / "b_rgb.PNG")
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "c.jpeg")
    (folder / "d").mkdir()
    Image.fromarray(rng.integers(0, 256, (33, 33, 3), dtype=np.uint8)).save(folder / "d" / "e.bmp")
    Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16)).save(folder / "f_grey16.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"ignored")
    return grey


def test_folder_of_mixed_images(tmp_path):
    grey = _write_folder(tmp_path / "imgs")
    name = f"folder:{tmp_path / 'imgs'}"
    train, sources = data.load(name, "train", seed=None, return_sources=True)
    assert sources == ["a_grey.png", "b_rgb.PNG", "c.jpeg", "d/e.bmp"]
    # the first file is grey, so the default is grey; every image is square-cropped to 32x32
    assert train.shape == (4, 1, 32, 32) and train.dtype == torch.float32
    assert 0 <= train.min() and train.max() <= 1
    test = data.load(name, "test", return_sources=True)
    assert test[1] == ["f_grey16.png"] and test[0].shape == (1, 1, 32, 32)
    colour = data.load(name, "train", seed=None, size=37, grey=False)
    assert colour.shape == (4, 3, 37, 37)
    # a grey image already square at the requested size comes back exactly (centre crop of 45x37)
    crop = torch.from_numpy(grey[4:41].astype(np.float32) / 255)
    assert torch.allclose(colour[0, 1], crop) and torch.equal(colour[0, 0], colour[0, 2])


def test_folder_colour_default_and_split_rule(tmp_path):
    folder = tmp_path / "ffhq"
    (folder / "00000").mkdir(parents=True)
    for i in range(20):
        image = np.full((8, 8, 3), i * 10, dtype=np.uint8)
        Image.fromarray(image).save(folder / "00000" / f"{i:05d}.png")
    train = data.load(f"folder:{folder}", "train", seed=None, size=8, return_sources=True)
    test = data.load(f"folder:{folder}", "test", seed=None, size=8, return_sources=True)
    assert train[0].shape == (18, 3, 8, 8) and test[0].shape == (2, 3, 8, 8)
    assert test[1] == ["00000/00018.png", "00000/00019.png"]
    assert data.count(f"folder:{folder}", "train") == 18


def test_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetUnavailableError, match="nowhere"):
        data.load(f"folder:{missing}", "train")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(DatasetUnavailableError, match="no image files"):
        data.load(f"folder:{tmp_path / 'empty'}", "train")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DatasetUnavailableError, match="not a folder"):
        data.load(f"folder:{tmp_path / 'file.png'}", "train")
    with pytest.raises(ValueError, match="needs a path"):
        data.load("folder:", "train")


def test_folder_unreadable_file_is_named(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((9, 9), np.uint8)).save(folder / f"ok{i}.png")
    (folder / "ok1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageReadError, match="ok1.png"):
        data.load(f"folder:{folder}", "train")


# ------------------------------------------------------------------ embedded offline sets


def test_photos_split_by_photograph():
    train, train_src = data.load("photos", "train", return_sources=True)
    test, test_src = data.load("photos", "test", return_sources=True)
    assert train.shape[1:] == (1, 32, 32) and test.shape[1:] == (1, 32, 32)
    assert len(train) >= 2000 and len(test) >= 100
    assert len(train_src) == len(train) and len(test_src) == len(test)
    assert not set(train_src) & set(test_src)
    assert set(test_src) == set(data.TEST_PHOTOS)
    for x in (train, test):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert x.flatten(1).std(dim=1).min() >= data.MIN_STD - 1e-4  # informative crops only


def test_photos_order_is_seeded_and_deterministic():
    a = data.load("photos", "train", n=50, seed=1)
    assert torch.equal(a, data.load("photos", "train", n=50, seed=1))
    assert torch.equal(a[:20], data.load("photos", "train", n=20, seed=1))
    assert not torch.equal(a, data.load("photos", "train", n=50, seed=2))
    natural = data.load("photos", "train", seed=None)
    order = torch.randperm(len(natural), generator=torch.Generator().manual_seed(1))[:50]
    assert torch.equal(a, natural[order])


def test_photos_rebuild_is_identical():
    before = data.load("photos-rgb", "test", seed=None)
    data._photo_crops.cache_clear()
    assert torch.equal(before, data.load("photos-rgb", "test", seed=None))


def test_photos_rgb_matches_grey_crops():
    rgb, src = data.load("photos-rgb", "train", return_sources=True)
    test, test_src = data.load("photos-rgb", "test", return_sources=True)
    assert rgb.shape[1:] == (3, 32, 32) and len(rgb) >= 1000 and len(test) >= 100
    assert not set(src) & set(test_src)
    # photos-rgb made grey = the grey crops of the same (colour) photographs, in the same order
    grey_rgb = data.load("photos-rgb", "test", seed=None, grey=True)
    grey, grey_src = data.load("photos", "test", seed=None, return_sources=True)
    same = torch.tensor([s == "astronaut" for s in grey_src])
    assert torch.allclose(grey_rgb, grey[same], atol=1e-5)


def test_faces():
    train, src = data.load("faces", "train", return_sources=True)
    test, test_src = data.load("faces", "test", return_sources=True)
    assert train.shape == (80, 1, 32, 32) and test.shape == (20, 1, 32, 32)
    assert not set(src) & set(test_src)
    assert 0 <= train.min() and train.max() <= 1
    assert data.load("faces", "test", size=25).shape == (20, 1, 25, 25)


# ------------------------------------------------------------------ streaming and validation


def test_stream_equals_load_and_restarts(tmp_path):
    _write_folder(tmp_path / "imgs")
    cases = [("photos", {"n": 70}), ("faces", {"size": 16}), (f"folder:{tmp_path / 'imgs'}", {})]
    for name, kw in cases:
        s = data.stream(name, "train", batch_size=32, seed=4, **kw)
        batches = list(s)
        assert len(batches) == len(s) and all(b.shape[0] <= 32 for b in batches)
        assert torch.equal(torch.cat(batches), data.load(name, "train", seed=4, **kw))
        assert torch.equal(torch.cat(list(s)), torch.cat(batches))  # re-iterable


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "imagenet"}, "valid names: photos"),
        ({"split": "val"}, "split"),
        ({"n": 0}, "n must be a positive int"),
        ({"n": 2.5}, "n must be a positive int"),
        ({"n": True}, "n must be a positive int"),
        ({"n": 10**6}, r"only \d+ images available"),
        ({"size": -1}, "size"),
        ({"grey": "yes"}, "grey"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_load_validates_arguments(kwargs, match):
    args = {"name": "faces", "split": "train"} | kwargs
    with pytest.raises(ValueError, match=match):
        data.load(**args)


def test_stream_validates_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        data.stream("faces", "train", batch_size=0)


def test_kept_tiles_are_the_chosen_rows_of_the_whole_multiscale_tiling():
    """The colour set builds only its kept tiles, scale by scale: they must be exactly the rows
    ``keep`` of every tile at every scale, concatenated (scale 1 first, then 2, then 4)."""
    rng = np.random.default_rng(0)
    image = rng.random((100, 140, 3))
    every = np.concatenate([data._tiles(data._block_mean(image, s)) for s in data.SCALES])
    assert len(every) == 14  # 12 tiles at scale 1, 2 at scale 2, none at scale 4
    keep = np.array([0, 5, 11, 13])  # both scales, the last tile of each
    np.testing.assert_array_equal(data._kept_tiles(image, keep), every[keep])
    assert data._kept_tiles(image, np.array([], dtype=np.int64)).shape == (0, 32, 32, 3)


def test_grey_and_colour_photo_sets_keep_the_same_crops():
    """Both sets choose their crops on the luma tiles: the luma of a colour crop is its grey crop
    (the block mean and the luma weights commute up to round-off)."""
    grey, names_g = data._photo_crops(False)["test"]
    rgb, names_c = data._photo_crops(True)["test"]
    mine = [i for i, name in enumerate(names_g) if name in set(names_c)]
    assert len(mine) == len(rgb) > 0 and [names_g[i] for i in mine] == names_c
    luma = np.einsum("nchw,c->nhw", rgb.astype(np.float64), np.array(data._LUMA))
    np.testing.assert_allclose(luma, grey[mine, 0], atol=1e-6)
