"""On-disk dataset format shared by every stage (pure Python, no ROS).

Layout of a dataset directory ``DIR``::

    DIR/images/<sample_id>.png        RGB image (8-bit PNG)
    DIR/segmentation/<sample_id>.png  optional instance segmentation, 16-bit PNG of
                                      (object index + 1), 0 = background
    DIR/samples.jsonl                 one JSON record per sample (below)

Record fields (a flat, fixed schema so Hugging Face ``datasets`` reads it with
``datasets.load_dataset("json", data_files=str(DIR / "samples.jsonl"))``)::

    sample_id       str
    image           str   path relative to DIR ("images/<sample_id>.png")
    segmentation    str   relative path or "" when absent
    width, height   int
    scene           dict  SceneState.to_dict() (floats always written as floats)
    relations       list of dicts with the SpatialRelation fields: subject_id,
                    reference_id, subject_description, reference_description,
                    terms (list[str]), horizontal_angle, vertical_angle, distance,
                    caption, negatives (list[str])
    valid           bool
    invalid_reason  str
    episode, step   int

``load_hf_dataset(DIR)`` loads it with explicit features (``hf_features()``) and the
image column decoded as ``datasets.Image``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

import numpy as np
from PIL import Image

from rls3_ros.core.scene import Sample, SceneState, SpatialRelation

SAMPLES_FILE = "samples.jsonl"
IMAGES_DIR = "images"
SEGMENTATION_DIR = "segmentation"

_CAMERA_FLOATS = ("position", "orientation", "fx", "fy", "cx", "cy")
_OBJECT_FLOATS = ("position", "orientation", "size", "visible_fraction")
_REL_FLOATS = ("horizontal_angle", "vertical_angle", "distance")

PathLike = Union[str, Path]


def safe_id(sample_id: str) -> str:
    """File-name-safe version of a sample id."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(sample_id)).strip("._")
    if not s:
        raise ValueError(f"sample id {sample_id!r} has no usable characters")
    return s


def _f(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [float(x) for x in v]
    return float(v)


def scene_record(scene: SceneState) -> Dict[str, Any]:
    """JSON-ready dict of a scene with a stable type for every field."""
    d = scene.to_dict()
    for k in _CAMERA_FLOATS:
        d["camera"][k] = _f(d["camera"][k])
    d["camera"]["width"] = int(d["camera"]["width"])
    d["camera"]["height"] = int(d["camera"]["height"])
    for o in d["objects"]:
        for k in _OBJECT_FLOATS:
            o[k] = _f(o[k])
        o["bbox"] = [int(x) for x in o["bbox"]]
        o["visible"] = bool(o["visible"])
        o["active"] = bool(o["active"])
    d["seed"] = int(d["seed"])
    d["stamp_ns"] = int(d["stamp_ns"])
    d["container_ids"] = [str(x) for x in d["container_ids"]]
    return d


def relation_record(rel: SpatialRelation) -> Dict[str, Any]:
    d = asdict(rel)
    for k in _REL_FLOATS:
        d[k] = float(d[k])
    d["terms"] = [str(t) for t in d["terms"]]
    d["negatives"] = [str(t) for t in d["negatives"]]
    return d


def sample_record(sample: Sample, image_path: str, segmentation_path: str = "") -> Dict[str, Any]:
    h, w = sample.image.shape[:2]
    return {
        "sample_id": str(sample.sample_id),
        "image": image_path,
        "segmentation": segmentation_path,
        "width": int(w),
        "height": int(h),
        "scene": scene_record(sample.scene),
        "relations": [relation_record(r) for r in sample.relations],
        "valid": bool(sample.valid),
        "invalid_reason": str(sample.invalid_reason),
        "episode": int(sample.episode),
        "step": int(sample.step),
    }


def _check_finite(rec: Dict[str, Any]) -> None:
    def walk(x: Any) -> None:
        if isinstance(x, float) and not math.isfinite(x):
            raise ValueError(f"sample {rec['sample_id']!r} holds a non-finite number")
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(rec)


class DatasetWriter:
    """Streams samples into a dataset directory (appends to an existing one).

    Use as a context manager or call ``close()``. Sample ids must be unique per dataset.
    """

    def __init__(self, directory: PathLike, write_segmentation: bool = True) -> None:
        self.dir = Path(directory)
        (self.dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        self.write_segmentation = write_segmentation
        self._ids = {r["sample_id"] for r in _iter_records(self.dir)} if (self.dir / SAMPLES_FILE).exists() else set()
        self._fh = open(self.dir / SAMPLES_FILE, "a", encoding="utf-8")
        self.count = 0

    def add(self, sample: Sample) -> Dict[str, Any]:
        """Write one sample (image file(s) + JSON line); returns its record."""
        if sample.sample_id in self._ids:
            raise ValueError(f"duplicate sample id {sample.sample_id!r}")
        img = np.asarray(sample.image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"sample {sample.sample_id!r}: image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        fid = safe_id(sample.sample_id)
        rel_img = f"{IMAGES_DIR}/{fid}.png"
        rel_seg = ""
        if self.write_segmentation and sample.segmentation is not None:
            seg = np.asarray(sample.segmentation).astype(np.int64) + 1
            if seg.min() < 0 or seg.max() > 65535:
                raise ValueError("segmentation indices out of range for a 16-bit PNG")
            (self.dir / SEGMENTATION_DIR).mkdir(exist_ok=True)
            rel_seg = f"{SEGMENTATION_DIR}/{fid}.png"
            Image.fromarray(seg.astype(np.uint16)).save(self.dir / rel_seg)
        rec = sample_record(sample, rel_img, rel_seg)
        _check_finite(rec)
        Image.fromarray(img).save(self.dir / rel_img)
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._fh.flush()
        self._ids.add(sample.sample_id)
        self.count += 1
        return rec

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_dataset(samples: Iterable[Sample], directory: PathLike, write_segmentation: bool = True) -> Path:
    """Write ``samples`` to ``directory`` (created; appended to if it holds a dataset)."""
    with DatasetWriter(directory, write_segmentation) as w:
        for s in samples:
            w.add(s)
    return Path(directory) / SAMPLES_FILE


def _iter_records(directory: Path) -> Iterator[Dict[str, Any]]:
    with open(directory / SAMPLES_FILE, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{directory / SAMPLES_FILE}:{n}: bad JSON: {e}") from None


def read_records(directory: PathLike) -> List[Dict[str, Any]]:
    """The raw JSON records of a dataset (no images loaded)."""
    return list(_iter_records(Path(directory)))


def record_to_sample(rec: Dict[str, Any], directory: Optional[PathLike] = None, load_images: bool = True) -> Sample:
    """A ``Sample`` from one record; images read from ``directory`` when ``load_images``."""
    image = np.zeros((int(rec["height"]), int(rec["width"]), 3), np.uint8)
    seg = None
    if load_images and directory is not None:
        d = Path(directory)
        image = np.asarray(Image.open(d / rec["image"]).convert("RGB"))
        if rec.get("segmentation"):
            seg = np.asarray(Image.open(d / rec["segmentation"])).astype(np.int32) - 1
    rels = [
        SpatialRelation(**{k: (list(v) if isinstance(v, list) else v) for k, v in r.items()})
        for r in rec.get("relations", [])
    ]
    return Sample(
        sample_id=rec["sample_id"],
        image=image,
        scene=SceneState.from_dict(rec["scene"]),
        relations=rels,
        valid=bool(rec["valid"]),
        invalid_reason=rec.get("invalid_reason", ""),
        episode=int(rec.get("episode", 0)),
        step=int(rec.get("step", 0)),
        segmentation=seg,
    )


def iter_dataset(directory: PathLike, load_images: bool = True) -> Iterator[Sample]:
    """Samples of a dataset, lazily."""
    d = Path(directory)
    for rec in _iter_records(d):
        yield record_to_sample(rec, d, load_images)


def read_dataset(directory: PathLike, load_images: bool = True) -> List[Sample]:
    """All samples of a dataset (with images unless ``load_images`` is False)."""
    return list(iter_dataset(directory, load_images))


def hf_features():
    """Explicit ``datasets.Features`` of a samples.jsonl record (image as a path string)."""
    from datasets import Features, Value

    f32, i64, s = Value("float64"), Value("int64"), Value("string")
    obj = {
        "id": s, "category": s, "description": s,
        "position": [f32], "orientation": [f32], "size": [f32], "bbox": [i64],
        "visible": Value("bool"), "visible_fraction": f32, "active": Value("bool"), "supported_by": s,
    }
    cam = {"position": [f32], "orientation": [f32], "width": i64, "height": i64, "fx": f32, "fy": f32, "cx": f32, "cy": f32}
    rel = {
        "subject_id": s, "reference_id": s, "subject_description": s, "reference_description": s,
        "terms": [s], "horizontal_angle": f32, "vertical_angle": f32, "distance": f32,
        "caption": s, "negatives": [s],
    }
    scene = {
        "scene_id": s, "scene_type": s, "seed": i64, "camera": cam, "objects": [obj],
        "container_ids": [s], "backend": s, "stamp_ns": i64,
    }
    return Features({
        "sample_id": s, "image": s, "segmentation": s, "width": i64, "height": i64,
        "scene": scene, "relations": [rel], "valid": Value("bool"), "invalid_reason": s,
        "episode": i64, "step": i64,
    })


def load_hf_dataset(directory: PathLike, decode_images: bool = True, cache_dir: Optional[PathLike] = None):
    """The dataset as a Hugging Face ``datasets.Dataset`` (split "train").

    Image paths are made absolute; with ``decode_images`` the ``image`` column is cast to
    ``datasets.Image`` (PIL images on access). ``cache_dir`` is passed to
    ``datasets.load_dataset`` (default: the Hugging Face cache).
    """
    import datasets

    d = Path(directory).resolve()
    ds = datasets.load_dataset(
        "json", data_files=str(d / SAMPLES_FILE), features=hf_features(), split="train",
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    ds = ds.map(lambda r: {"image": str(d / r["image"])}, keep_in_memory=True)
    if decode_images:
        ds = ds.cast_column("image", datasets.Image())
    return ds
