"""State files that cannot execute code when read: JSON for the structure, ``.npz`` for arrays.

:func:`dump_state` writes ``<name>.json`` (and ``<name>.npz`` when the state holds arrays);
:func:`load_state` reads them back with ``json.loads`` and ``numpy.load(allow_pickle=False)``: no
unpickler, no ``eval``, no import by name. What a state may hold:

- ``None``, ``bool``, ``int`` (any size), ``float`` (``nan``/``inf`` too), ``str``, ``list``, ``tuple``,
  ``dict`` (any of these as keys), ``collections.deque``;
- numpy arrays of numeric/bool/fixed-width string dtypes and numpy scalars (their dtype kept);
- torch tensors (stored as numpy arrays with their torch dtype; gradients are not state);
- the scene data types of :mod:`rls3_ros.core.scene` (``Sample``, ``SceneState``, ``CameraModel``,
  ``ObjectState``, ``SpatialRelation``), looked up in a fixed table by name.

Anything else raises :class:`StateError` on write (nothing is silently dropped), and a file that
names anything outside this list raises :class:`StateError` on read.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from rls3_ros.core.atomic_io import atomic_file

FORMAT = 1
_TAG = "__t"


class StateError(ValueError):
    """A state that cannot be written safely, or a state file that does not read back safely."""


def _dataclass_table() -> Dict[str, type]:
    from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation

    return {c.__name__: c for c in (Sample, SceneState, CameraModel, ObjectState, SpatialRelation)}


_NP_KINDS = set("biufcSU")  # bool, ints, floats, complex, fixed-width bytes / str: no objects, no records


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the project
        return None
    return torch


class _Encoder:
    def __init__(self) -> None:
        self.arrays: Dict[str, np.ndarray] = {}
        self.types = _dataclass_table()
        self.torch = None

    def array(self, a: np.ndarray, where: str) -> str:
        if a.dtype.kind not in _NP_KINDS or a.dtype.fields is not None:
            raise StateError(f"{where}: numpy dtype {a.dtype} cannot be stored without pickle")
        key = f"a{len(self.arrays)}"
        self.arrays[key] = np.ascontiguousarray(a)
        return key

    def enc(self, x: Any, where: str) -> Any:
        t = type(x)
        if x is None or t is bool or t is str:
            return x
        if t is int:
            return x
        if t is float:
            return x if math.isfinite(x) else {_TAG: "float", "v": repr(x)}
        if t is list:
            return [self.enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if t is tuple:
            return {_TAG: "tuple", "v": [self.enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if t is collections.deque:
            return {_TAG: "deque", "maxlen": x.maxlen, "v": [self.enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if t is dict or t is collections.OrderedDict:
            if all(type(k) is str and k != _TAG for k in x):
                return {k: self.enc(v, f"{where}.{k}") for k, v in x.items()}
            return {_TAG: "dict", "v": [[self.enc(k, f"{where} key"), self.enc(v, f"{where}[{k!r}]")]
                                        for k, v in x.items()]}
        if isinstance(x, np.ndarray) and t is np.ndarray:
            return {_TAG: "nd", "k": self.array(x, where)}
        if isinstance(x, np.generic):
            if x.dtype.kind not in _NP_KINDS:
                raise StateError(f"{where}: numpy scalar {x.dtype} cannot be stored without pickle")
            v = x.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = repr(v)
            elif isinstance(v, complex):
                v = [v.real, v.imag]
            elif isinstance(v, bytes):
                v = v.decode("latin-1")
            return {_TAG: "np", "dtype": x.dtype.str, "v": v}
        torch = self.torch or _torch()
        if torch is not None and isinstance(x, torch.Tensor):
            self.torch = torch
            tt = x.detach().cpu()
            dtype = str(tt.dtype).replace("torch.", "")
            if tt.dtype == torch.bfloat16:
                tt = tt.float()
            return {_TAG: "torch", "dtype": dtype, "k": self.array(tt.contiguous().numpy(), where)}
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            name = t.__name__
            if self.types.get(name) is not t:
                raise StateError(f"{where}: {t.__module__}.{t.__qualname__} is not a storable state type")
            return {_TAG: "dc", "cls": name,
                    "v": {f.name: self.enc(getattr(x, f.name), f"{where}.{f.name}") for f in dataclasses.fields(x)}}
        raise StateError(f"{where}: a {t.__module__}.{t.__qualname__} cannot be stored without pickle")


class _Decoder:
    def __init__(self, arrays: Dict[str, np.ndarray]):
        self.arrays = arrays
        self.types = _dataclass_table()

    def array(self, key: Any) -> np.ndarray:
        if not isinstance(key, str) or key not in self.arrays:
            raise StateError(f"array {key!r} is missing from the state's .npz")
        return self.arrays[key]

    def dec(self, x: Any) -> Any:
        if isinstance(x, list):
            return [self.dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        tag = x.get(_TAG)
        if tag is None:
            return {k: self.dec(v) for k, v in x.items()}
        v = x.get("v")
        if tag == "float":
            if v not in ("nan", "inf", "-inf"):
                raise StateError(f"bad float {v!r}")
            return float(v)
        if tag == "tuple":
            return tuple(self.dec(e) for e in self._list(v))
        if tag == "deque":
            maxlen = x.get("maxlen")
            if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
                raise StateError(f"bad deque maxlen {maxlen!r}")
            return collections.deque((self.dec(e) for e in self._list(v)), maxlen=maxlen)
        if tag == "dict":
            out = {}
            for pair in self._list(v):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise StateError("bad dict entry")
                k = self.dec(pair[0])
                try:
                    out[k] = self.dec(pair[1])
                except TypeError as e:  # an unhashable key
                    raise StateError(f"bad dict key {k!r}") from e
            return out
        if tag == "nd":
            return self.array(x.get("k"))
        if tag == "np":
            dt = self._dtype(x.get("dtype"))
            if dt.kind == "c":
                val = complex(*self._list(v))
            elif dt.kind == "S":
                val = str(v).encode("latin-1")
            elif dt.kind == "f" and isinstance(v, str):
                val = float(v) if v in ("nan", "inf", "-inf") else self._bad(f"bad float {v!r}")
            else:
                val = v
            return np.array(val, dtype=dt)[()]
        if tag == "torch":
            torch = _torch()
            if torch is None:
                raise StateError("a torch tensor in the state, and no torch")
            name = x.get("dtype")
            dtype = getattr(torch, name, None) if isinstance(name, str) and name.isidentifier() else None
            if not isinstance(dtype, torch.dtype):
                raise StateError(f"bad torch dtype {name!r}")
            return torch.from_numpy(np.array(self.array(x.get("k")))).to(dtype)
        if tag == "dc":
            cls = self.types.get(x.get("cls"))
            if cls is None:
                raise StateError(f"{x.get('cls')!r} is not a storable state type")
            fields = {f.name for f in dataclasses.fields(cls)}
            if not isinstance(v, dict) or not set(v) <= fields:
                raise StateError(f"bad fields for {cls.__name__}")
            try:
                return cls(**{k: self.dec(e) for k, e in v.items()})
            except TypeError as e:
                raise StateError(f"bad {cls.__name__}: {e}") from e
        raise StateError(f"unknown state tag {tag!r}")

    @staticmethod
    def _list(v: Any) -> List[Any]:
        if not isinstance(v, list):
            raise StateError("malformed state (a list expected)")
        return v

    @staticmethod
    def _dtype(s: Any) -> np.dtype:
        try:
            dt = np.dtype(str(s))
        except TypeError as e:
            raise StateError(f"bad numpy dtype {s!r}") from e
        if dt.kind not in _NP_KINDS or dt.fields is not None:
            raise StateError(f"numpy dtype {s!r} is not allowed")
        return dt

    @staticmethod
    def _bad(msg: str):
        raise StateError(msg)


def encode(obj: Any, where: str = "state") -> Tuple[Any, Dict[str, np.ndarray]]:
    """(JSON-ready structure, arrays by key) of ``obj``; :class:`StateError` for what is not storable."""
    e = _Encoder()
    return e.enc(obj, where), e.arrays


def decode(tree: Any, arrays: Optional[Dict[str, np.ndarray]] = None) -> Any:
    return _Decoder(dict(arrays or {})).dec(tree)


def storable(obj: Any) -> bool:
    """True when ``obj`` can be written by :func:`dump_state`."""
    try:
        encode(obj)
    except StateError:
        return False
    return True


def state_files(name: str) -> Tuple[str, str]:
    return f"{name}.json", f"{name}.npz"


def dump_state(directory: str, name: str, obj: Any) -> List[str]:
    """Write ``obj`` as ``<name>.json`` (+ ``<name>.npz`` for its arrays) in ``directory``, each file
    atomically (fsync + rename). Returns the file names written."""
    tree, arrays = encode(obj, name)
    jname, zname = state_files(name)
    doc = {"format": FORMAT, "arrays": zname if arrays else "", "state": tree}
    written = []
    if arrays:
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        with atomic_file(os.path.join(directory, zname), "wb") as f:
            f.write(buf.getvalue())
        written.append(zname)
    with atomic_file(os.path.join(directory, jname), "w", encoding="utf-8") as f:
        json.dump(doc, f, allow_nan=False)
    written.append(jname)
    return written


def load_state(directory: str, name: str) -> Any:
    """Read what :func:`dump_state` wrote (StateError with a short reason when it does not read)."""
    jname, zname = state_files(name)
    jpath = os.path.join(directory, jname)
    try:
        with open(jpath, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise StateError(f"{jname} is missing") from None
    except (OSError, ValueError, RecursionError) as e:  # torn, not UTF-8, not JSON, nested too deep
        raise StateError(f"{jname} does not parse ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "state" not in doc:
        raise StateError(f"{jname} is not a state file of format {FORMAT}")
    arrays: Dict[str, np.ndarray] = {}
    if doc.get("arrays"):
        if doc["arrays"] != zname:
            raise StateError(f"{jname} names another array file ({doc['arrays']!r})")
        try:
            with np.load(os.path.join(directory, zname), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise StateError(f"{zname} is missing") from None
        except Exception as e:  # a bad zip, an object array (needs pickle), a torn member: unreadable
            raise StateError(f"{zname} does not read without pickle ({type(e).__name__}: {e})") from None
    try:
        return decode(doc["state"], arrays)
    except StateError as e:
        raise StateError(f"{jname}: {e}") from None
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise StateError(f"{jname}: malformed ({type(e).__name__}: {e})") from None
