"""Image datasets as float32 tensors ``(N, C, H, W)`` with values in ``[0, 1]``.

Two entry points:

* :func:`load` returns a whole split (or its first ``n`` images) as one tensor;
* :func:`stream` returns a re-iterable :class:`ImageStream` of ``(b, C, H, W)`` batches, for sets
  too large to hold; the estimators accept it as ``train`` (each ``iter()`` restarts it).

Dataset names (see :data:`DATASETS`):

``"photos"``
    Grey 32×32 crops cut from the photographs scikit-image ships (no download needed). Crops are
    non-overlapping, on a grid centred in the photograph, at three scales (the photograph
    block-averaged by 1, 2 and 4). Nearly constant crops (standard deviation < 0.02) are dropped
    and no photograph gives more than 400 crops. **Train and test are split by photograph**: the
    test crops come from ``astronaut`` and ``camera`` only (:data:`TEST_PHOTOS`), which no
    training crop comes from.
``"photos-rgb"``
    The same crops, in colour, from the colour photographs only (same split rule).
``"faces"``
    The 100 faces of ``skimage.data.lfw_subset()`` (its first 100 images; the other 100 are
    non-faces), 25×25 grey, resized to 32×32. Train: the first 80, test: the last 20.
``"fashionmnist"``, ``"mnist"``, ``"cifar10"``
    Through torchvision, in its on-disk layout under ``root`` (``<root>/FashionMNIST/raw/``,
    ``<root>/MNIST/raw/``, ``<root>/cifar-10-batches-py/``). Native sizes: 28×28 grey, 32×32 colour.
``"folder:<path>"``
    Every ``.png .jpg .jpeg .bmp .tif .tiff`` file under ``path`` (recursively, hidden entries
    skipped), sorted by relative path, centre-cropped to a square and resized to ``size``
    (default 32). Split: the last 10% of the sorted files (at least one when there are two or
    more files) are the test split, the rest the training split.

Conventions shared by every set:

* Order: the images of a split are shuffled by ``torch.randperm`` under ``seed`` (``seed=None``
  keeps the natural order); ``n`` takes the first ``n`` of that order, so a smaller ``n`` gives a
  prefix of a larger one. :func:`stream` yields the same images in the same order as :func:`load`.
* ``size``: every image is resized to ``size × size`` (bilinear, antialiased, clamped to
  [0, 1]); ``None`` keeps the native size (32 for the embedded sets and folders).
* ``grey``: ``True`` converts colour to luma ``0.2125 R + 0.7154 G + 0.0721 B`` (scikit-image's
  ``rgb2gray``) giving ``C = 1``; ``False`` gives ``C = 3`` (grey images are repeated on three
  channels); ``None`` keeps the native channels (for a folder: those of its first file).
* Files: ``root`` defaults to ``$LEMMSE_DATA`` or ``~/.cache/lemmse_lite``. With
  ``download=None`` (default) or ``True`` the files are read when present and downloaded when
  missing; ``download=False`` never touches the network. A set that can be neither read nor
  downloaded raises :class:`DatasetUnavailableError`, naming the files expected.

Built arrays (embedded sets, torchvision files) are cached in memory, so repeated loads are fast.
"""

from __future__ import annotations

import numbers
import os
import pickle
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_positive_int

__all__ = [
    "DATASETS",
    "SPLITS",
    "TEST_PHOTOS",
    "DatasetUnavailableError",
    "ImageReadError",
    "ImageStream",
    "count",
    "data_root",
    "load",
    "stream",
]

DATASETS = ("photos", "photos-rgb", "faces", "fashionmnist", "mnist", "cifar10", "folder:<path>")
SPLITS = ("train", "test")

#: Photographs whose crops form the test split of "photos" / "photos-rgb" (all others: train).
TEST_PHOTOS = ("astronaut", "camera")
#: Photographs used, in build order: (name, skimage.data function, colour?).
PHOTOS = (
    ("astronaut", "astronaut", True),
    ("coffee", "coffee", True),
    ("chelsea", "chelsea", True),
    ("rocket", "rocket", True),
    ("immunohistochemistry", "immunohistochemistry", True),
    ("hubble_deep_field", "hubble_deep_field", True),
    ("retina", "retina", True),
    ("motorcycle", "stereo_motorcycle", True),
    ("camera", "camera", False),
    ("moon", "moon", False),
    ("page", "page", False),
    ("text", "text", False),
    ("coins", "coins", False),
    ("grass", "grass", False),
    ("gravel", "gravel", False),
    ("brick", "brick", False),
    ("cell", "cell", False),
)
CROP = 32
SCALES = (1, 2, 4)
MIN_STD = 0.02
MAX_CROPS_PER_PHOTO = 400
N_FACES, N_FACES_TEST = 100, 20
FOLDER_TEST_FRACTION = 0.1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DOWNLOAD_TIMEOUT_S = 20.0
_LUMA = (0.2125, 0.7154, 0.0721)
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class DatasetUnavailableError(FileNotFoundError):
    """The dataset's files are absent (or a folder is missing/empty) and cannot be obtained."""


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded; the message names the file."""


# ------------------------------------------------------------------------------------ public API


def load(
    name: str,
    split: str,
    n: int | None = None,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    seed: int | None = 0,
    size: int | None = None,
    grey: bool | None = None,
    return_sources: bool = False,
):
    """Load a split as one float32 tensor ``(N, C, H, W)`` with values in ``[0, 1]``.

    Args:
        name: one of :data:`DATASETS` (``"folder:<path>"`` with a real path).
        split: ``"train"`` or ``"test"``.
        n: number of images (the first ``n`` of the seeded order); ``None``: all of them.
        root: folder holding the torchvision files (default ``$LEMMSE_DATA`` or
            ``~/.cache/lemmse_lite``); unused by the other sets.
        download: ``None``/``True``: download torchvision files when missing; ``False``: never.
        seed: seed of the shuffle that fixes the order; ``None`` keeps the natural order.
        size: output side ``H = W``; ``None`` keeps the native size.
        grey: ``True`` → 1 channel, ``False`` → 3 channels, ``None`` → native channels.
        return_sources: also return a list of ``N`` strings naming where each image comes from
            (embedded photos: the photograph's name, e.g. ``"camera"``; faces:
            ``"lfw_subset[i]"``; folders: the file's path relative to the folder; torchvision sets:
            ``"<name>:<split>[i]"``).

    Returns:
        ``images`` of shape ``(N, C, H, W)``, or ``(images, sources)`` with ``return_sources``.

    Raises:
        ValueError: unknown name or split, bad ``n``/``seed``/``size``/``grey``.
        DatasetUnavailableError: files absent and not downloadable; folder missing or empty.
        ImageReadError: an image file of a folder cannot be decoded.
    """
    part, order = _select(name, split, n, root, download, seed, size, grey)
    images = part.read(order, size, grey)
    return (images, part.sources(order)) if return_sources else images


def stream(
    name: str,
    split: str,
    batch_size: int,
    n: int | None = None,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    seed: int | None = 0,
    size: int | None = None,
    grey: bool | None = None,
) -> ImageStream:
    """The same images as :func:`load`, as a re-iterable stream of ``(b, C, H, W)`` batches.

    Batches follow :func:`load`'s order (concatenated, they equal ``load(...)``); all have
    ``batch_size`` images except possibly the last. Only one batch is in memory at a time for
    folders; the other sets keep their compact (uint8 or cached) arrays and convert per batch.
    Arguments are as in :func:`load`; errors are raised here, not during iteration.
    """
    check_positive_int(batch_size, "batch_size")
    part, order = _select(name, split, n, root, download, seed, size, grey)
    return ImageStream(part, order, int(batch_size), size, grey)


def count(name: str, split: str, root=None, download: bool | None = None) -> int:
    """Number of images available in a split (what ``n`` may be at most)."""
    return _split(name, split, root, download).count


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The dataset folder: ``root`` if given, else ``$LEMMSE_DATA``, else ``~/.cache/lemmse_lite``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("LEMMSE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lemmse_lite"


class ImageStream:
    """Re-iterable batches ``(b, C, H, W)`` of one split; every ``iter()`` starts again.

    Attributes:
        n: number of images; ``batch_size``: images per batch; ``len(stream)``: number of batches.
    """

    def __init__(self, part: _Split, order: torch.Tensor, batch_size: int, size, grey):
        self._part, self._order = part, order
        self.batch_size, self._size, self._grey = batch_size, size, grey
        self.n = len(order)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, self.n, self.batch_size):
            yield self._part.read(
                self._order[start : start + self.batch_size], self._size, self._grey
            )

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def shard(self, start: int, stop: int) -> ImageStream:
        """The images ``start .. stop − 1`` of this stream's order, as a stream of their own (one
        rank's part of a sharded run): concatenated, the shards of a partition equal the stream,
        and only the shard's batches are ever read."""
        if isinstance(start, bool) or isinstance(stop, bool) or not (isinstance(start, int) and isinstance(stop, int)) \
                or not 0 <= start <= stop <= self.n:
            raise ValueError(f"shard must be 0 <= start <= stop <= n = {self.n}, got start={start!r}, stop={stop!r}")
        return ImageStream(self._part, self._order[start:stop], self.batch_size, self._size, self._grey)

    def __repr__(self) -> str:
        return f"ImageStream({self._part.label}, n={self.n}, batch_size={self.batch_size})"


# ------------------------------------------------------------------------- one split, read lazily


@dataclass(frozen=True)
class _Split:
    """A split whose images are read on demand.

    ``read_native(indices)`` returns a float32 batch ``(b, C, h, w)`` (same-sized sets) or a list
    of ``(C, h, w)`` tensors (folders), in [0, 1], native channels; ``names(indices)`` the sources.
    """

    label: str
    count: int
    channels: int
    default_size: int | None
    read_native: Callable[[Sequence[int]], torch.Tensor | list]
    names: Callable[[Sequence[int]], list]

    def read(self, indices: torch.Tensor, size: int | None, grey: bool | None) -> torch.Tensor:
        """Images ``indices`` as ``(b, C, size, size)`` float32 in [0, 1]."""
        channels = self.channels if grey is None else (1 if grey else 3)
        size = size or self.default_size
        images = self.read_native(indices.tolist())
        if isinstance(images, torch.Tensor):
            return _resize(_to_channels(images, channels), size)
        if not images:
            return torch.zeros(0, channels, size, size)
        return torch.cat([_resize(_to_channels(im[None], channels), size) for im in images])

    def sources(self, indices: torch.Tensor) -> list:
        return self.names(indices.tolist())


def _select(name, split, n, root, download, seed, size, grey):
    """Validate the arguments; return the split and the (seeded, truncated) order of indices."""
    if size is not None:
        check_positive_int(size, "size")
    if grey not in (None, True, False):
        raise ValueError(f"grey must be True, False or None, got {grey!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    part = _split(name, split, root, download)
    if part.count == 0:
        raise ValueError(f"{part.label} has no images")
    if n is not None:
        check_positive_int(n, "n")
        if n > part.count:
            raise ValueError(f"n={n} but {part.label} has only {part.count} images available")
    if seed is None:
        order = torch.arange(part.count)
    else:
        order = torch.randperm(part.count, generator=torch.Generator().manual_seed(int(seed)))
    return part, order[: part.count if n is None else int(n)]


def _split(name, split, root, download) -> _Split:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, one of {DATASETS}, got {name!r}")
    if name.startswith("folder:"):
        return _folder_split(name[len("folder:") :], split)
    if name in ("photos", "photos-rgb"):
        return _array_split(name, split, *_photo_crops(name == "photos-rgb")[split], None)
    if name == "faces":
        return _array_split(name, split, *_faces()[split], CROP)
    if name in _TORCHVISION:
        array = _torchvision_array(name, split, str(data_root(root)), download)
        names = [f"{name}:{split}[{i}]" for i in range(len(array))]
        return _array_split(name, split, array, names, None)
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def _array_split(name, split, array: np.ndarray, names: list, default_size) -> _Split:
    """A split over an in-memory array ``(N, C, H, W)``, uint8 (0..255) or float32 (0..1)."""
    scale = 255.0 if array.dtype == np.uint8 else 1.0

    def read_native(idx):
        return torch.from_numpy(array[np.asarray(idx, dtype=np.int64)]).float() / scale

    return _Split(
        label=f"{name!r} {split}",
        count=len(array),
        channels=array.shape[1],
        default_size=default_size,
        read_native=read_native,
        names=lambda idx: [names[i] for i in idx],
    )


# ------------------------------------------------------------------------- pixel helpers


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``(b, c, h, w)`` with c in {1, 3} → ``(b, channels, h, w)`` (luma or repetition)."""
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return torch.einsum("bchw,c->bhw", x, x.new_tensor(_LUMA))[:, None]
    return x.expand(-1, 3, -1, -1).contiguous()


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize ``(b, c, h, w)`` to ``(b, c, size, size)`` (bilinear, antialiased, clamped)."""
    if size is None or x.shape[-2:] == (size, size):
        return x.contiguous()
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.clamp_(0.0, 1.0)


# ------------------------------------------------------------------------- embedded sets


def _read_photo(function: str) -> np.ndarray | None:
    """One scikit-image photograph as float64 ``(H, W)`` or ``(H, W, 3)`` in [0, 1], or None."""
    import skimage.data

    try:
        image = getattr(skimage.data, function)()
    except Exception as error:  # noqa: BLE001 (a photo needing a download in this version)
        warnings.warn(f"skimage.data.{function}() unavailable, skipped: {error}", stacklevel=3)
        return None
    image = np.asarray(image[0] if isinstance(image, tuple) else image)
    image = image[..., :3] if image.ndim == 3 else image
    photo = image.astype(np.float64)
    photo /= 255.0  # in place: one float64 copy of the largest photograph in memory, not two
    return photo


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Downscale ``(H, W[, C])`` by averaging ``factor × factor`` blocks."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor, *image.shape[2:])
    return blocks.mean(axis=(1, 3))


def _tiles(image: np.ndarray, p: int = CROP) -> np.ndarray:
    """Non-overlapping ``p × p`` tiles on a centred grid: ``(k, p, p[, C])``."""
    h, w = image.shape[:2]
    top, left = (h % p) // 2, (w % p) // 2
    tiles = [
        image[top + i * p : top + (i + 1) * p, left + j * p : left + (j + 1) * p]
        for i in range(h // p)
        for j in range(w // p)
    ]
    return np.stack(tiles) if tiles else np.zeros((0, p, p) + image.shape[2:])


def _crops_of(name: str, function: str, colour: bool) -> np.ndarray | None:
    """Informative crops of one photograph (None if unavailable): luma ``(k, 1, p, p)``, or colour
    ``(k, C, p, p)`` if ``colour``. The crops kept are chosen on the luma tiles, so both sets keep
    the same ones."""
    photo = _read_photo(function)
    if photo is None:
        return None
    luma = photo @ np.array(_LUMA) if photo.ndim == 3 else photo
    if not colour:
        photo = None  # this frame holds the only reference: the grey set frees the colour copy now
    grey = np.concatenate([_tiles(_block_mean(luma, s)) for s in SCALES])
    keep = np.flatnonzero(grey.reshape(len(grey), -1).std(axis=1) >= MIN_STD)
    if len(keep) > MAX_CROPS_PER_PHOTO:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        keep = np.sort(rng.choice(keep, MAX_CROPS_PER_PHOTO, replace=False))
    if not colour:
        return grey[keep][:, None]
    del grey, luma  # the colour tiles are built one scale at a time, only the kept ones
    tiles = _kept_tiles(photo, keep)
    return (tiles if photo.ndim == 3 else tiles[..., None]).transpose(0, 3, 1, 2)


def _kept_tiles(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Rows ``keep`` of ``np.concatenate([_tiles(_block_mean(image, s)) for s in SCALES])``,
    built one scale at a time so that the unkept tiles never exist together."""
    parts, start = [], 0
    for s in SCALES:
        tiles = _tiles(_block_mean(image, s))
        here = keep[(keep >= start) & (keep < start + len(tiles))]
        parts.append(tiles[here - start])
        start += len(tiles)
    return np.concatenate(parts)


@cache
def _photo_crops(colour: bool) -> dict:
    """``{split: (array (N, C, 32, 32) float32, source names)}`` for "photos" or "photos-rgb".

    One photograph at a time, each freed before the next is read: building the set peaks at the
    largest photograph's work, not at the sum of them."""
    parts = {"train": ([], []), "test": ([], [])}
    for name, function, is_colour in PHOTOS:
        if colour and not is_colour:
            continue
        kept = _crops_of(name, function, colour)
        if kept is None:
            continue
        kept = kept.astype(np.float32)
        crops, sources = parts["test" if name in TEST_PHOTOS else "train"]
        crops.append(kept)
        sources.extend([name] * len(kept))
    channels = 3 if colour else 1
    return {
        split: (np.concatenate(c) if c else np.zeros((0, channels, CROP, CROP), np.float32), s)
        for split, (c, s) in parts.items()
    }


@cache
def _faces() -> dict:
    """``{split: (array (N, 1, 25, 25) float32, source names)}`` from ``skimage.data.lfw_subset``."""
    import skimage.data

    faces = np.asarray(skimage.data.lfw_subset()[:N_FACES])
    faces = (faces / 255.0 if faces.dtype == np.uint8 else faces).astype(np.float32)[:, None]
    names = [f"lfw_subset[{i}]" for i in range(N_FACES)]
    cut = N_FACES - N_FACES_TEST
    return {"train": (faces[:cut], names[:cut]), "test": (faces[cut:], names[cut:])}


# ------------------------------------------------------------------------- torchvision sets

_TORCHVISION = {"fashionmnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10"}


def _expected_files(name: str, split: str, root: Path) -> list[Path]:
    """The files torchvision's layout puts under ``root`` for one split."""
    if name == "cifar10":
        batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        return [root / "cifar-10-batches-py" / b for b in batches]
    prefix = "train" if split == "train" else "t10k"
    return [root / _TORCHVISION[name] / "raw" / f"{prefix}-images-idx3-ubyte"]


def _unavailable(name, split, root, files, reason) -> DatasetUnavailableError:
    listed = "\n  ".join(str(f) for f in files)
    return DatasetUnavailableError(
        f"dataset {name!r} ({split}) is not available: {reason}.\n"
        f"Expected files (torchvision layout) under root={str(root)!r}:\n  {listed}\n"
        f"Download them where there is network (load({name!r}, {split!r}, download=True)) and "
        f"copy the root folder here, set root= or $LEMMSE_DATA, or use an embedded offline set: "
        f"'photos', 'photos-rgb', 'faces'."
    )


#: torchvision's download in a child process, whose sockets alone get the timeout (argv: the
#: dataset class, the root folder, the timeout in seconds).
_DOWNLOAD_SCRIPT = (
    "import socket, sys; socket.setdefaulttimeout(float(sys.argv[3])); "
    "import torchvision.datasets as tvd; getattr(tvd, sys.argv[1])(sys.argv[2], train=True, download=True)"
)


def _download(name: str, root: Path) -> None:
    """Run torchvision's download in a child process, its sockets under a timeout of
    :data:`DOWNLOAD_TIMEOUT_S` (torchvision takes no timeout; setting one here would change every
    socket of the caller's process). RuntimeError with the child's last line if it fails."""
    argv = [sys.executable, "-c", _DOWNLOAD_SCRIPT, _TORCHVISION[name], str(root), str(DOWNLOAD_TIMEOUT_S)]
    try:
        run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20 * DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no download within {20 * DOWNLOAD_TIMEOUT_S} s") from None
    if run.returncode != 0:
        lines = (run.stderr or run.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"the download exited with code {run.returncode}")


def _ensure_files(name: str, split: str, root: Path, download: bool | None) -> list[Path]:
    files = _expected_files(name, split, root)
    if all(f.is_file() for f in files):
        return files
    missing = [f for f in files if not f.is_file()]
    if download is False:
        raise _unavailable(name, split, root, missing, "files missing and download=False")
    try:
        _download(name, root)
    except Exception as error:  # noqa: BLE001 (offline, mirror down, disk full: one clear error)
        reason = f"files missing and the download failed ({type(error).__name__}: {error})"
        raise _unavailable(name, split, root, missing, reason) from None
    if not all(f.is_file() for f in files):
        raise _unavailable(name, split, root, missing, "files still missing after download")
    return files


@lru_cache(maxsize=4)
def _torchvision_array(name: str, split: str, root: str, download: bool | None) -> np.ndarray:
    """The split as uint8 ``(N, C, H, W)``, read from torchvision's raw files."""
    files = _ensure_files(name, split, Path(root), download)
    try:
        if name == "cifar10":
            return np.concatenate([_read_cifar_batch(f) for f in files])
        from torchvision.datasets.mnist import read_image_file

        return read_image_file(str(files[0])).numpy()[:, None]
    except Exception as error:  # noqa: BLE001 (truncated or foreign files: one clear error)
        raise _unavailable(
            name,
            split,
            root,
            files,
            f"cannot read the files ({type(error).__name__}: {error}); "
            "delete them to download again",
        ) from None


def _read_cifar_batch(path: Path) -> np.ndarray:
    """One CIFAR-10 python batch file as uint8 ``(N, 3, 32, 32)``."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    return np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)


# ------------------------------------------------------------------------- image folders


def _folder_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries skipped), sorted by relative path."""
    if not folder.exists():
        raise DatasetUnavailableError(f"image folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise DatasetUnavailableError(f"{str(folder)!r} is not a folder")
    try:
        files = [
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        ]
    except OSError as error:
        raise DatasetUnavailableError(
            f"cannot list image folder {str(folder)!r}: {error}"
        ) from None
    if not files:
        raise DatasetUnavailableError(
            f"image folder {str(folder)!r} holds no image files ({' '.join(IMAGE_EXTENSIONS)})"
        )
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _folder_split(path: str, split: str) -> _Split:
    if not path:
        raise ValueError("'folder:' needs a path, e.g. 'folder:~/data/ffhq32'")
    folder = Path(path).expanduser()
    files = _folder_files(folder)
    n_test = max(1, int(len(files) * FOLDER_TEST_FRACTION)) if len(files) >= 2 else 0
    chosen = files[: len(files) - n_test] if split == "train" else files[len(files) - n_test :]
    return _Split(
        label=f"folder {str(folder)!r} {split}",
        count=len(chosen),
        channels=3 if _is_colour(files[0]) else 1,
        default_size=CROP,
        read_native=lambda idx: [_square(_read_image(chosen[i])) for i in idx],
        names=lambda idx: [chosen[i].relative_to(folder).as_posix() for i in idx],
    )


def _open_image(path: Path):
    from PIL import Image

    try:
        return Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot read image file {str(path)!r}: {error}") from None


def _is_colour(path: Path) -> bool:
    with _open_image(path) as image:
        return image.mode not in _GREY_MODES


def _read_image(path: Path) -> torch.Tensor:
    """One image file as float32 ``(C, h, w)`` in [0, 1], C = 1 (grey modes) or 3."""
    from PIL import Image

    with _open_image(path) as image:
        try:
            array = _pil_to_array(image)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise ImageReadError(f"cannot read image file {str(path)!r}: {error}") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _pil_to_array(image) -> np.ndarray:
    """Decode a PIL image to float ``(h, w)`` or ``(h, w, 3)`` in [0, 1] (alpha dropped)."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float64) / 65535.0
    if mode == "I":
        array = np.asarray(image, dtype=np.float64)
        return np.clip(array / (65535.0 if array.max() > 255 else 255.0), 0.0, 1.0)
    if mode == "F":
        return np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    grey = mode in _GREY_MODES
    return np.asarray(image.convert("L" if grey else "RGB"), dtype=np.float64) / 255.0


def _square(image: torch.Tensor) -> torch.Tensor:
    """Centre crop ``(C, h, w)`` to ``(C, s, s)``, ``s = min(h, w)``."""
    h, w = image.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[:, top : top + s, left : left + s]
