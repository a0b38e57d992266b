"""Answering spatial queries with a SpatialVLM (pure Python, no ROS).

Shared by the ``spatial_query`` node and ``rls3 query`` (direct mode) so both validate the
same way and phrase the same answers. Every invalid request raises ``QueryError`` with a
reason meant for the asker; ``answer_query`` turns it (and model errors) into an answer
with ``success=False``.
"""

from __future__ import annotations

import importlib
import os
import stat
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rls3_ros.captions import terms as T
from rls3_ros.vlm.interface import SpatialVLM
from rls3_ros.vlm.queries import parse_relation

QUERY_TYPES = ("where", "check", "what")
# longest object name / relation / query type accepted: descriptions are a few words ("small red mug"); each
# character costs tokenisation under the model lock (256 candidates of 1000 characters held it ~50-100 ms)
MAX_TEXT_CHARS = 200
MAX_CANDIDATES = 256  # most 'what' candidates accepted per query, given or taken from the scene state
MIN_IMAGE_SIDE = 16  # smallest image width and height [px] answered (a 1x1 or 64x1 image has no layout)


class QueryError(ValueError):
    """A query that cannot be answered; the message says why."""


def check_limits(req: "QueryRequest") -> None:
    """Refuse (QueryError) a request whose texts or candidate list exceed the limits, before any
    work: every text the query type uses at most ``MAX_TEXT_CHARS`` characters (stripped), at most
    ``MAX_CANDIDATES`` candidates. Fields the query type ignores are not looked at. Cheap: a
    service calls it before it converts the image or takes the model lock."""
    qt = req.query_type or ""
    if len(qt) > MAX_TEXT_CHARS:
        raise QueryError(f"query_type is too long ({len(qt)} characters > {MAX_TEXT_CHARS}); "
                         f"use one of: {', '.join(QUERY_TYPES)}")
    qt = qt.strip().lower()
    fields = [("reference", req.reference)]
    if qt in ("where", "check"):
        fields.append(("subject", req.subject))
    if qt in ("check", "what"):
        fields.append(("relation", req.relation))
    for role, text in fields:
        n = len((text or "").strip())
        if n > MAX_TEXT_CHARS:
            raise QueryError(f"{role} {'is' if role == 'relation' else 'name is'} too long "
                             f"({n} characters > {MAX_TEXT_CHARS})")
    if qt == "what":
        if len(req.candidates) > MAX_CANDIDATES:
            raise QueryError(f"too many candidates ({len(req.candidates)} > {MAX_CANDIDATES})")
        for i, c in enumerate(req.candidates):
            n = len((c or "").strip())
            if n > MAX_TEXT_CHARS:
                raise QueryError(f"candidate {i} name is too long ({n} characters > {MAX_TEXT_CHARS})")


def prepare_image(model: Optional[SpatialVLM], image: np.ndarray) -> None:
    """Do a model's per-image work that needs no model lock, so a big image holds the lock only for
    the model's own passes: the grounded model's frozen encoder features (its ``features`` is a
    thread-safe ``FeatureCache`` keyed by the image content; the locked pass then finds them
    cached, the same features). A no-op for other models; never raises."""
    cache = getattr(model, "features", None)
    try:
        from rls3_ros.vlm.feature_cache import FeatureCache

        if isinstance(cache, FeatureCache):
            cache([image])
    except Exception:  # noqa: BLE001 - the locked pass computes (and reports) it again
        pass


@dataclass
class QueryRequest:
    query_type: str
    subject: str = ""
    reference: str = ""
    relation: str = ""
    candidates: List[str] = field(default_factory=list)


@dataclass
class QueryAnswer:
    success: bool
    message: str = ""
    answer: str = ""
    terms: List[str] = field(default_factory=list)
    confidence: float = 0.0
    term_probabilities: Dict[str, float] = field(default_factory=dict)
    holds: bool = False
    ranked: List[Tuple[str, float]] = field(default_factory=list)
    adapter: str = ""


def check_relation(relation: str) -> List[str]:
    """Canonical terms of a query's relation phrase ("left", "to the left of", "above and behind"),
    parsed by ``queries.parse_relation``; QueryError with the reason if it is empty, too long or
    not a relation."""
    rel = (relation or "").strip()
    if not rel:
        raise QueryError(f"relation is empty; use one of: {', '.join(T.TERMS)}")
    if len(rel) > MAX_TEXT_CHARS:
        raise QueryError(f"relation is too long ({len(rel)} characters > {MAX_TEXT_CHARS})")
    try:
        return list(parse_relation(rel))
    except ValueError as e:
        raise QueryError(str(e)) from None


def predicted_terms(probs: Dict[str, float]) -> List[str]:
    """Terms of a 'where' answer: per axis the likeliest term if its probability is >= 0.5;
    the likeliest term overall if no term reaches 0.5."""
    out = []
    for axis in (T.VERTICAL_TERMS, T.DEPTH_TERMS, T.LATERAL_TERMS):
        best = max((t for t in axis if t in probs), key=lambda t: probs[t], default=None)
        if best is not None and probs[best] >= 0.5:
            out.append(best)
    if not out and probs:
        out = [max(probs, key=probs.get)]
    return T.canonical_terms(out)


def _match_object(name: str, known: Sequence[str]) -> bool:
    n = name.strip().lower()
    return any(n == k.strip().lower() for k in known)


def check_object(role: str, name: str, known: Optional[Sequence[str]], model: Optional[SpatialVLM] = None) -> str:
    """Validate an object name: non-empty, and one of ``known`` names when those are given.

    Without known names (no scene state for the image) the name must be one the ``model`` can
    ground: every word of it in the model's vocabulary (``SpatialVLM.unknown_words``)."""
    n = (name or "").strip()
    if not n:
        raise QueryError(f"{role} is empty: name the object (e.g. 'mug')")
    if len(n) > MAX_TEXT_CHARS:
        raise QueryError(f"{role} name is too long ({len(n)} characters > {MAX_TEXT_CHARS})")
    if known is not None and len(known) > 0:
        if not _match_object(n, known):
            shown = ", ".join(sorted(set(known))[:20])
            raise QueryError(f"unknown {role} {n!r}: not in the current scene (known objects: {shown})")
    elif model is not None:
        unknown = list(model.unknown_words(n))
        if unknown:
            vocab = ", ".join(sorted(model.vocabulary())[:40]) or "?"
            raise QueryError(
                f"unknown {role} {n!r}: no scene state is known for this image and the model has never learnt "
                f"the word(s) {', '.join(repr(w) for w in unknown)}; publish the camera's scene_state or "
                f"describe the object with the model's words ({vocab})")
    return n


def _same_object(a: str, b: str, object_key: Optional[Callable[[str], str]]) -> bool:
    key = object_key or (lambda n: n.strip().lower())
    return key(a) == key(b)


def answer_query(
    model: Optional[SpatialVLM],
    image: Optional[np.ndarray],
    req: QueryRequest,
    known_objects: Optional[Sequence[str]] = None,
    default_candidates: Optional[Sequence[str]] = None,
    object_key: Optional[Callable[[str], str]] = None,
    checked: Optional["CheckedQuery"] = None,
) -> QueryAnswer:
    """Answer one query; never raises for a bad request (success=False + reason instead).

    ``known_objects``: names (ids, descriptions, categories) of the objects in the scene the
    image shows, if known — names outside it are rejected; without them, names with words the
    model never learnt are rejected. ``default_candidates``: 'what' candidates to use when the
    request gives none. ``object_key``: name -> identity of the object it names (e.g. the scene
    object's id, so "mug_1" and "red mug" are the same object); default: the lower-cased name.
    A subject that is the reference is refused; a 'what' candidate that is the reference is not
    ranked. Images smaller than ``MIN_IMAGE_SIDE`` pixels on a side are refused.
    ``checked``: the result of :func:`check_query` for this request (validation already done,
    e.g. before taking the model lock): only the model's pass runs.
    """
    try:
        if checked is None:
            checked = _check(model, image, req, known_objects, default_candidates, object_key)
        return _run(model, checked)
    except Exception as e:  # noqa: BLE001 - a query must never kill the caller
        return _failed(model, e)


def check_query(
    model: Optional[SpatialVLM],
    image: Optional[np.ndarray],
    req: QueryRequest,
    known_objects: Optional[Sequence[str]] = None,
    default_candidates: Optional[Sequence[str]] = None,
    object_key: Optional[Callable[[str], str]] = None,
) -> Union["CheckedQuery", QueryAnswer]:
    """Everything :func:`answer_query` checks, without a model pass (names against the scene or the
    model's vocabulary, relation, candidates, image): a :class:`CheckedQuery` to pass to
    ``answer_query(..., checked=...)``, or the failed answer. Reads the model only (its
    vocabulary), so a service can run it before the model lock."""
    try:
        return _check(model, image, req, known_objects, default_candidates, object_key)
    except Exception as e:  # noqa: BLE001
        return _failed(model, e)


def _failed(model, e: Exception) -> QueryAnswer:
    adapter = getattr(model, "adapter", "") if model is not None else ""
    if isinstance(e, QueryError):
        return QueryAnswer(success=False, message=str(e), adapter=adapter)
    if isinstance(e, (ValueError, KeyError)):  # the model rejected the inputs: still the asker's problem
        return QueryAnswer(success=False, message=f"model rejected the query: {e}", adapter=adapter)
    return QueryAnswer(success=False, message=f"model failed: {type(e).__name__}: {e}", adapter=adapter)


@dataclass
class CheckedQuery:
    """A validated query (``check_query``): what the model pass needs."""

    qt: str
    img: np.ndarray
    reference: str
    subject: str = ""
    terms: List[str] = field(default_factory=list)
    candidates: List[str] = field(default_factory=list)


def _check(model, image, req, known, default_candidates, object_key=None) -> CheckedQuery:
    check_limits(req)
    qt = (req.query_type or "").strip().lower()
    if qt not in QUERY_TYPES:
        raise QueryError(f"unknown query_type {req.query_type!r}; use one of: {', '.join(QUERY_TYPES)}")
    if model is None:
        raise QueryError("no model loaded")
    if image is None:
        raise QueryError("no image")
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0 or img.dtype != np.uint8:
        raise QueryError(f"image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    if img.shape[0] < MIN_IMAGE_SIDE or img.shape[1] < MIN_IMAGE_SIDE:
        raise QueryError(f"image is too small ({img.shape[1]}x{img.shape[0]} px): width and height must be at least "
                         f"{MIN_IMAGE_SIDE} px")
    reference = check_object("reference", req.reference, known, model)

    def subject_of() -> str:
        subject = check_object("subject", req.subject, known, model)
        if _same_object(subject, reference, object_key):
            raise QueryError(f"subject {subject!r} and reference {reference!r} are the same object: "
                             "a relation needs two different objects")
        return subject

    if qt == "where":
        return CheckedQuery(qt, img, reference, subject_of())
    terms = check_relation(req.relation)
    if qt == "check":
        return CheckedQuery(qt, img, reference, subject_of(), terms)
    cands = [c.strip() for c in req.candidates if c.strip()]
    if not cands:
        defaults = list(default_candidates or [])
        if len(defaults) > MAX_CANDIDATES:
            raise QueryError(f"'what' without candidates takes them from the scene state, which has {len(defaults)} "
                             f"objects (> {MAX_CANDIDATES}); name the candidates")
        cands = [c for c in defaults if not _same_object(c, reference, object_key)]
        if not cands:
            raise QueryError("'what' needs candidates: none given and no scene objects known")
    else:
        for c in cands:
            check_object("candidate", c, known, model)
        cands = [c for c in cands if not _same_object(c, reference, object_key)]
        if not cands:
            raise QueryError(f"'what' needs candidates other than the reference {reference!r}")
    return CheckedQuery(qt, img, reference, "", terms, cands)


def _run(model, q: CheckedQuery) -> QueryAnswer:
    """The model pass of a checked query."""
    adapter = model.adapter
    img, reference, subject, terms = q.img, q.reference, q.subject, q.terms
    if q.qt == "where":
        probs = {k: float(v) for k, v in model.where(img, subject, reference).items()}
        if not probs:
            raise QueryError("the model returned no term probabilities")
        terms = predicted_terms(probs)
        conf = float(min(probs[t] for t in terms))
        return QueryAnswer(
            success=True, message="ok", answer=T.make_caption(subject, terms, reference), terms=terms,
            confidence=conf, term_probabilities=probs, adapter=adapter,
        )
    relation = " and ".join(terms)
    if q.qt == "check":
        holds, p = model.check(img, subject, relation, reference)
        phrase = T.relation_phrase(terms)
        answer = (f"Yes, the {subject} is {phrase} the {reference}." if holds
                  else f"No, the {subject} is not {phrase} the {reference}.")
        return QueryAnswer(
            success=True, message="ok", answer=answer, terms=terms, holds=bool(holds),
            confidence=float(p if holds else 1.0 - p), adapter=adapter,
        )
    ranked = [(str(c), float(s)) for c, s in model.what(img, relation, reference, q.candidates)]
    if not ranked:
        raise QueryError("the model ranked no candidates")
    best, score = ranked[0]
    return QueryAnswer(
        success=True, message="ok", answer=T.make_caption(best, terms, reference), terms=terms,
        confidence=score, ranked=ranked, adapter=adapter,
    )


# -- model loading ----------------------------------------------------------------------

def load_model(spec: str, adapter: str = "", options: Optional[Dict] = None, allow_code: bool = True,
               adapter_policy=None) -> SpatialVLM:
    """A SpatialVLM from a model spec, with ``adapter`` activated if given.

    ``spec``: anything ``rls3_ros.vlm.factory.load_vlm`` accepts ("embedded", a directory, a
    Hugging Face id ...), or ``py:<module>:<function>[:<arg>]`` to call a loader function
    (``function(arg)`` or ``function()``) returning a SpatialVLM — for plugins and tests.
    A ``py:`` spec imports and runs code named by a string: it must come from the operator (the
    command line, a launch or params file read at start-up), never from anything a remote ROS
    participant can set (the nodes make their ``model`` parameter read-only and read it once);
    ``allow_code=False`` refuses it (ValueError).
    ``options``: keyword options for the loader (e.g. ``{"lora": {"batch_size": 8}}``, see
    ``load_vlm``); passed to ``py:`` loaders as keywords too.
    ``adapter`` is checked and loaded through ``rls3_ros.vlm.adapter_trust`` (regular files within
    size and rank caps, safetensors weights, staged copy); ``adapter_policy``: an
    ``AdapterPolicy`` (default: anywhere, ``rls3_adapter.json`` optional: a local operator's path).
    Raises whatever the loader raises (FileNotFoundError for a missing model, ValueError
    for an unusable adapter).
    """
    spec = (spec or "").strip()
    if not spec:
        raise ValueError("empty model spec")
    if spec.startswith("py:") and not allow_code:
        raise ValueError(f"model spec {spec[:80]!r}: py: specs run code and are only accepted from the operator at start-up")
    if spec.startswith("py:"):
        parts = spec[3:].split(":", 2)
        if len(parts) < 2:
            raise ValueError(f"model spec {spec!r}: expected py:<module>:<function>[:<arg>]")
        fn: Callable = getattr(importlib.import_module(parts[0]), parts[1])
        model = fn(parts[2], **(options or {})) if len(parts) == 3 else fn(**(options or {}))
    else:
        from rls3_ros.vlm.factory import load_vlm

        model = load_vlm(spec, **(options or {}))
    if not isinstance(model, SpatialVLM):
        raise TypeError(f"model spec {spec!r} gave a {type(model).__name__}, not a SpatialVLM")
    if adapter:
        from rls3_ros.vlm.adapter_trust import AdapterPolicy, base_identity, load_checked

        policy = adapter_policy or AdapterPolicy(require_meta=False)
        load_checked(model, adapter, policy, base_identity(model))
    return model


def check_adapter_dir(path: str, policy=None, base=None) -> str:
    """Raise ValueError (``adapter_trust.AdapterRefused``) with a reason unless ``path`` is a peft
    adapter directory that ``policy`` (an ``AdapterPolicy``; default: anywhere, no
    ``rls3_adapter.json`` needed) accepts for the served ``base`` (a ``BaseIdentity``); returns
    its real path. The full check (including the weights) is ``adapter_trust.stage_adapter``."""
    from rls3_ros.vlm.adapter_trust import ADAPTER_CONFIG, AdapterPolicy, AdapterRefused, resolve_adapter_dir

    real = resolve_adapter_dir(path, policy or AdapterPolicy(require_meta=False))
    try:
        st = os.lstat(os.path.join(real, ADAPTER_CONFIG))
    except OSError:
        raise AdapterRefused(f"{path!r} is not a peft adapter ({ADAPTER_CONFIG} missing)") from None
    if not stat.S_ISREG(st.st_mode):
        raise AdapterRefused(f"{path!r}: {ADAPTER_CONFIG} is not a regular file")
    return real
