"""Streaming of training sets, chunk by chunk, and the input checks the estimators share.

The lowest package layer above :mod:`lemmse_lite.checks` and :mod:`lemmse_lite.estimators.engine`:
the estimators, the diagnostics and :func:`lemmse_lite.estimators.metrics.nearest_training` all read
the training set through :func:`training_chunks`, so memory never grows with the number of images N
(`course/05_closed_form.md`, the streaming softmax of `eq-attention`).

A training set is a tensor (N, C, H, W) or any iterable of such tensors (e.g. a list of chunks or a
generator reading from disk); only a re-iterable one (a tensor, a list) can be streamed twice, which
the second-pass diagnostics need (:func:`is_reiterable`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from ..checks import all_finite, check_positive_int
from .engine import EngineConfig, ScoreBlock, ScoreConsumer, stream_scores

DEFAULT_MAX_MEMORY = 256 * 2**20  # bytes of working memory for one chunk of training keys


def check_chunk(chunk, shape, name: str = "train") -> torch.Tensor:
    """One element of a training set: a floating tensor (N, C, H, W) whose (C, H, W) is ``shape``."""
    if not isinstance(chunk, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (N, C, H, W) or an iterable of such tensors, "
                        f"got an element of type {type(chunk).__name__}")
    if chunk.dim() != 4:
        raise ValueError(f"{name} must have 4 dimensions (N, C, H, W), got shape {tuple(chunk.shape)}")
    if not chunk.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {chunk.dtype}")
    if tuple(chunk.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} images have shape {tuple(chunk.shape[1:])} but the measurements y "
                         f"have shape {tuple(shape)} (channels, height, width must match)")
    return chunk


def check_chunk_size(chunk_size) -> int | None:
    """``chunk_size``: a positive int or ``None`` (the default rule of :func:`default_chunk_size`)."""
    return check_positive_int(chunk_size, "chunk_size", allow_none=True)


def default_chunk_size(n_keys_per_image: int, key_dim: int, max_memory: int = DEFAULT_MAX_MEMORY) -> int:
    """The one default chunk rule: as many training images as fit ``max_memory`` bytes when each
    image brings ``n_keys_per_image`` keys of ``key_dim`` features held about four times over
    (patches, transformed keys, augmented keys, values) in 4-byte floats."""
    per_image = n_keys_per_image * (key_dim + 2) * 4 * 4
    return max(1, max_memory // per_image)


def non_finite_error(start: int, count: int) -> ValueError:
    """The one error for a chunk of ``count`` training images from ``start`` that holds NaN/Inf."""
    return ValueError(f"train contains NaN or Inf values (images {start}..{start + count - 1})")


def training_chunks(train, shape, chunk_size: int, device, dtype,
                    check_finite: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(index of first image, chunk)`` with chunks of at most ``chunk_size`` images, moved
    to ``device``/``dtype``. Raises if ``train`` is empty or (``check_finite``) holds NaN/Inf;
    ``check_finite=False`` is for a consumer that checks each chunk itself, in a pass it makes
    anyway (:func:`non_finite_error`)."""
    if isinstance(train, torch.Tensor):
        if train.dim() != 4:
            raise ValueError(f"train must have 4 dimensions (N, C, H, W), got shape {tuple(train.shape)}")
        source: Iterable = (train,)
    elif isinstance(train, Iterable) and not isinstance(train, (str, bytes)):
        source = train
    else:
        raise TypeError(f"train must be a tensor (N, C, H, W) or an iterable of such tensors, got {type(train).__name__}")
    start = 0
    for part in source:
        check_chunk(part, shape)
        for c0 in range(0, len(part), chunk_size):
            chunk = part[c0 : c0 + chunk_size]
            # finiteness per chunk: a whole-tensor check would allocate ~2x the training set
            if check_finite and not all_finite(chunk):
                raise non_finite_error(start, len(chunk))
            yield start, chunk.to(device=device, dtype=dtype)
            start += len(chunk)
    if start == 0:
        raise ValueError("train is empty: expected at least one training image")


def is_reiterable(train) -> bool:
    """True when ``train`` can be streamed again (a tensor or a container, not a one-shot iterator)."""
    return isinstance(train, torch.Tensor) or iter(train) is not train


_is_reiterable = is_reiterable  # the name of the first edition


class BlockSource(Protocol):
    """What turns one chunk of training images into score blocks: ``source(start, chunk)`` with
    ``chunk`` (Nc, C, H, W) the images from index ``start`` yields
    :class:`~lemmse_lite.estimators.engine.ScoreBlock` s (the LE-MMSE's
    :class:`~lemmse_lite.estimators.local_estimators.PatchBlocks`, the image estimators' rescoring softmax)."""

    def __call__(self, start: int, chunk: torch.Tensor) -> Iterator[ScoreBlock]:
        ...


@dataclass(frozen=True)
class ScoreStream:
    """Every score block of one estimate, replayable: the training set ``train`` (tensor or
    iterable of (N, C, H, W) chunks, images of shape ``shape`` (C, H, W)) read ``chunk_size``
    images at a time onto ``device``/``dtype``, each chunk turned into blocks by ``blocks`` and
    scored by :func:`lemmse_lite.estimators.engine.stream_scores` with ``engine``. The estimate's
    pass and the diagnostics' N_eff passes (`eq-n-eff`) run the same object, so every score is
    bit-identical across passes. ``check_finite``: as in :func:`training_chunks`."""

    train: object
    shape: tuple
    chunk_size: int
    device: object
    dtype: torch.dtype
    blocks: BlockSource
    engine: EngineConfig
    check_finite: bool = True

    def run(self, consumer: ScoreConsumer, progress: Callable[[int], None] | None = None) -> int:
        """Feed ``consumer`` every block of every chunk; ``progress(n)`` after each chunk with the
        number of images seen. Returns the number of training images N."""
        n_seen = 0
        chunks = training_chunks(self.train, self.shape, self.chunk_size, self.device, self.dtype, self.check_finite)
        for start, chunk in chunks:
            for block in self.blocks(start, chunk):
                if not isinstance(block, ScoreBlock):
                    raise TypeError(f"a block source must yield ScoreBlock, got {type(block).__name__}")
                stream_scores(consumer, block.rows, block.q_aug, block.k_aug, block.values, block.key_ids,
                              block.key_bias, engine=self.engine)
            n_seen = start + len(chunk)
            if progress is not None:
                progress(n_seen)
        return n_seen
