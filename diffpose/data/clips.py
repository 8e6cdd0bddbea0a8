"""Clip dataset: one person box in a key frame -> the crops of frames t-d..t+d plus key-frame targets.

A sample is one person in one frame of a PoseTrack18-format sequence (synthetic or real). Its
clip is the key frame and its neighbours at offsets ``-d*stride .. +d*stride`` (``T = 2d + 1``
frames, key frame at ``T // 2``); a neighbour before the first or after the last frame, or whose
file is missing, is replaced by the key frame. Every frame is warped with the key frame's affine
crop (box enlarged 25%, aspect fixed to the input size), so the model sees the same region in all
of them. Targets are the key frame's heatmaps from the shared codec.

Reproducibility: the sampler yields ``epoch * len(dataset) + index`` and the augmentation of a
sample is drawn from ``numpy.random.default_rng((seed, epoch, index))``: data order and
augmentation depend only on (seed, epoch), never on the worker count or on what ran before, which
makes a resumed training exact and works with persistent workers (they never see ``set_epoch``).

Decoding JPEGs dominates the cost: each worker keeps an LRU cache of decoded frames
(``cache_mb``); neighbouring samples share most of their frames.

Shapes: T frames, J joints, crop (H, W), heatmaps (h, w).
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from diffpose.data import keypoints as kp
from diffpose.data import transforms as tf
from diffpose.data.posetrack import load_sequence, sequence_files
from diffpose.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """params.yaml ``data``: crop and augmentation of training clips, loader settings."""

    box_enlarge: float = 1.25
    frame_stride: int = 1  # gap between neighbouring frames of a clip
    workers: int = 1  # loader processes per training process (0 = in the main process)
    cache_mb: float = 1024  # memory for decoded frames per worker (LRU)
    augmentation: tf.Augmentation = tf.Augmentation()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DataConfig":
        values = dict(values)
        aug = tf.Augmentation(**values.pop("augmentation", {}))
        return cls(augmentation=aug, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sequence:
    """One video: its annotation file, frames in temporal order (paths relative to the image
    root) and their image ids."""

    name: str
    source: str
    file_names: tuple[str, ...]
    image_ids: tuple[int, ...]


@dataclass(frozen=True)
class Sample:
    """One person box in one frame. ``keypoints [J, 3]`` in image px (None at inference)."""

    seq: int  # index into the dataset's sequences
    frame: int  # position of the key frame in the sequence
    box: tuple[float, float, float, float]  # x, y, w, h
    score: float = 1.0
    keypoints: np.ndarray | None = field(default=None, compare=False)
    track_id: int = -1


def _frame_order(images: list[dict]) -> list[dict]:
    if all("frame_id" in im for im in images):
        return sorted(images, key=lambda im: im["frame_id"])
    return list(images)


def _box_from_keypoints(kpts: np.ndarray) -> tuple[float, float, float, float] | None:
    vis = kpts[:, 2] > 0
    if vis.sum() < 2:
        return None
    lo, hi = kpts[vis, :2].min(axis=0), kpts[vis, :2].max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])


def load_sequences(annotations: str | os.PathLike | list) -> list[tuple[Sequence, dict]]:
    """Every sequence file under ``annotations`` (file, folder or list) with its PoseTrack18 dict."""
    files = sequence_files(annotations)
    if not files:
        raise DataError(f"{annotations}: no PoseTrack annotation files (*.json) found")
    out = []
    for path in files:
        obj = load_sequence(path)
        images = _frame_order(obj["images"])
        if not images:
            raise DataError(f"{path}: 'images' is empty; a sequence needs at least one frame")
        seq = Sequence(
            name=path.stem, source=str(path),
            file_names=tuple(im["file_name"] for im in images),
            image_ids=tuple(int(im["id"]) for im in images),
        )
        out.append((seq, obj))
    return out


def person_samples(sequences: list[tuple[Sequence, dict]], *, labelled_only: bool) -> list[Sample]:
    """One sample (score 1) per GT person with a usable box; a missing ``bbox`` is taken from the
    labelled keypoints' extent.

    ``labelled_only``: training, keep only people with at least one labelled keypoint and carry
    their keypoints (the targets); otherwise (inference on GT boxes) keep every boxed person and
    no keypoints."""
    samples: list[Sample] = []
    for s, (seq, obj) in enumerate(sequences):
        position = {image_id: i for i, image_id in enumerate(seq.image_ids)}
        for ann in obj.get("annotations", []):
            kpts = None
            if "keypoints" in ann:
                kpts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(kp.NUM_KEYPOINTS, 3)
            if labelled_only and (kpts is None or not (kpts[:, 2] > 0).any()):
                continue
            box = ann.get("bbox")
            if box is None and kpts is not None:
                box = _box_from_keypoints(kpts)
            if box is None or box[2] <= 0 or box[3] <= 0:
                continue
            samples.append(Sample(s, position[ann["image_id"]], tuple(float(v) for v in box), 1.0,
                                  kpts if labelled_only else None, int(ann.get("track_id", -1))))
    return samples


def training_samples(sequences: list[tuple[Sequence, dict]]) -> list[Sample]:
    """One sample per annotated person with at least one labelled keypoint (GT boxes)."""
    return person_samples(sequences, labelled_only=True)


class FrameCache:
    """Decoded frames by path within ``megabytes`` of memory, least recently used evicted first
    (one per worker process)."""

    def __init__(self, megabytes: float) -> None:
        self.capacity = max(float(megabytes), 0.0) * 1e6
        self.used = 0
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, path: str) -> np.ndarray | None:
        """The frame as ``[H, W, 3]`` uint8 BGR, or None if the file does not exist."""
        img = self._items.get(path)
        if img is not None:
            self._items.move_to_end(path)
            self.hits += 1
            return img
        self.misses += 1
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            if os.path.exists(path):
                raise DataError(f"{path}: cannot decode image (corrupt or not an image)")
            return None
        if img.nbytes <= self.capacity:
            self._items[path] = img
            self.used += img.nbytes
            while self.used > self.capacity:
                self.used -= self._items.popitem(last=False)[1].nbytes
        return img


class ClipDataset(Dataset):
    """Person clips for training (``train=True``: augmentation + targets) or inference.

    Item keys: ``frames`` uint8 ``[T, 3, H, W]`` RGB; ``matrix`` float64 ``[2, 3]`` (image px ->
    crop px of this sample); ``index``; ``score`` (box score); and with a codec ``target``
    float32 ``[J, h, w]``, ``target_weight`` float32 ``[J]``.
    """

    def __init__(
        self,
        sequences: list[Sequence],
        samples: list[Sample],
        image_root: str | os.PathLike,
        *,
        input_size: tuple[int, int],
        num_frames: int,
        frame_stride: int = 1,
        codec: Any = None,
        train: bool = False,
        augmentation: tf.Augmentation | None = None,
        box_enlarge: float = 1.25,
        seed: int = 0,
        cache_mb: float = 256,
    ) -> None:
        if num_frames < 1 or num_frames % 2 == 0:
            raise ValueError(f"num_frames must be odd and >= 1 (key frame in the middle), got {num_frames}")
        self.sequences = list(sequences)
        self.samples = list(samples)
        self.image_root = Path(image_root)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.codec = codec
        self.train = train
        self.augmentation = augmentation if train else None
        self.box_enlarge = box_enlarge
        self.seed = seed
        self.cache = FrameCache(cache_mb)
        self.missing_frames = self._count_missing()

    def _count_missing(self) -> int:
        """Frame files the sequences list but the image root lacks (replaced by the key frame
        in clips, so a wrong image root would silently remove all temporal context: warn)."""
        missing = [(seq, name) for seq in self.sequences for name in seq.file_names
                   if not (self.image_root / name).is_file()]
        if missing:
            seq, name = missing[0]
            log.warning("%d of %d frame files missing under %s (first: %s of %s); clips use the key frame instead",
                        len(missing), sum(len(s.file_names) for s in self.sequences), self.image_root, name,
                        seq.source)
        return len(missing)

    def __len__(self) -> int:
        return len(self.samples)

    def frame_paths(self, sample: Sample) -> list[str]:
        """Paths of the clip's T frames (key frame in the middle; out-of-range -> key frame)."""
        seq = self.sequences[sample.seq]
        d = self.num_frames // 2
        paths = []
        for k in range(-d, d + 1):
            j = sample.frame + k * self.frame_stride
            j = j if 0 <= j < len(seq.file_names) else sample.frame
            paths.append(str(self.image_root / seq.file_names[j]))
        return paths

    def load_frames(self, sample: Sample) -> list[np.ndarray]:
        paths = self.frame_paths(sample)
        key_path = paths[self.num_frames // 2]
        key = self.cache.get(key_path)
        if key is None:
            seq = self.sequences[sample.seq]
            raise DataError(f"{key_path}: key frame missing (sequence {seq.source}, frame {sample.frame})")
        # a missing neighbour file is replaced by the key frame (like a neighbour outside the video)
        return [key if p == key_path else self.cache.get(p) for p in paths]

    def __getitem__(self, encoded: int) -> dict[str, Any]:
        epoch, index = divmod(int(encoded), len(self.samples))
        sample = self.samples[index]
        rng = np.random.default_rng((self.seed, epoch, index)) if self.train else None
        crop = tf.sample_crop(sample.box, sample.keypoints, self.input_size, enlarge=self.box_enlarge,
                              aug=self.augmentation, rng=rng)
        matrix = tf.crop_affine(crop.center, crop.size, self.input_size, rotation=crop.rotation, flip=crop.flip)
        images = self.load_frames(sample)
        key = images[self.num_frames // 2]
        crops = np.stack([tf.warp(key if im is None else im, matrix, self.input_size) for im in images])
        crops = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2))  # BGR -> RGB, [T, 3, H, W]
        item: dict[str, Any] = {
            "frames": torch.from_numpy(crops),
            "matrix": torch.from_numpy(matrix),
            "index": index,
            "score": float(sample.score),
        }
        if self.codec is not None and sample.keypoints is not None:
            kpts = tf.crop_keypoints(sample.keypoints, matrix, crop.flip, self.input_size)
            heatmaps, weight = self.codec.encode(kpts.astype(np.float32))
            item["target"] = torch.as_tensor(np.asarray(heatmaps, dtype=np.float32))
            item["target_weight"] = torch.as_tensor(np.asarray(weight, dtype=np.float32))
        return item


class EpochSampler(DistributedSampler):
    """DistributedSampler whose indices carry the epoch (``epoch * n + i``), so the dataset can
    seed each sample's augmentation from (seed, epoch, index) even in persistent workers."""

    def __iter__(self):
        n = len(self.dataset)
        return (self.epoch * n + i for i in super().__iter__())


def _worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(1)


def make_loader(
    dataset: ClipDataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[DataLoader, EpochSampler]:
    """A loader over ``dataset`` and its sampler (call ``sampler.set_epoch(e)`` before each epoch).

    Each of ``world_size`` processes gets its own shard; workers persist across epochs; memory is
    pinned only when batches go to a CUDA device.
    """
    sampler = EpochSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                           drop_last=drop_last)
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.device(device).type == "cuda",
        drop_last=drop_last,
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=generator,
        prefetch_factor=4 if workers > 0 else None,
    )
    return loader, sampler


def batches_per_epoch(num_samples: int, batch_size: int, world_size: int = 1, drop_last: bool = False) -> int:
    per_rank = num_samples // world_size if drop_last else math.ceil(num_samples / world_size)
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
