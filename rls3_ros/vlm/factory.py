"""``load_vlm(spec)``: one entry point for every model family.

Specs (a string, or a dict with ``spec`` / ``family`` + ``path`` and options):

- ``"embedded"`` (default): the pretrained embedded base (see ``embedded_base_dir``);
  ``"embedded:/dir"``: an embedded base saved elsewhere; ``"embedded:random"``: untrained
  (tests). Options: ``config`` (dict of SpatialMatchConfig fields for ``random``).
- ``"clip:/path-or-hf-id"``, ``"siglip:/path-or-hf-id"``: a transformers CLIPModel / SiglipModel
  from a local directory or the user's Hugging Face cache (``local_files_only=True``; nothing
  is downloaded).
- ``"paligemma:/path-or-hf-id"``: PaliGemmaForConditionalGeneration (generative family).

Common options: ``lora`` (dict of ``LoraSettings`` fields: r, alpha, target_modules,
learning_rate, batch_size), ``adapter`` (a peft adapter directory to activate).

Where the embedded base lives: ``$RLS3_MODEL_DIR/embedded`` if ``RLS3_MODEL_DIR`` is set, else
``~/.cache/rls3_ros/models/embedded``; if that holds no model, the artifact committed in the
repository (``models/embedded``) is used. ``rls3 pretrain`` writes the first location.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from rls3_ros.vlm.interface import SpatialVLM
from rls3_ros.vlm.lora import LoraSettings
from rls3_ros.vlm.model_dirs import REPO_MODELS, model_dir  # noqa: F401  (re-exported)

FAMILIES = ("grounded", "embedded", "clip", "siglip", "paligemma")


class ModelNotFoundError(FileNotFoundError):
    """A model named by a spec is not on this machine; the message says what to get."""


def embedded_base_dir(must_exist: bool = False) -> Path:
    """Directory of the pretrained embedded base: the cache, else the committed artifact."""
    cached = model_dir() / "embedded"
    if (cached / "config.json").is_file():
        return cached
    repo = REPO_MODELS / "embedded"
    if (repo / "config.json").is_file():
        return repo
    if must_exist:
        raise ModelNotFoundError(
            f"no pretrained embedded model in {cached} (or {repo}); run `rls3 pretrain` to build it "
            "(a few minutes on a CPU)"
        )
    return cached


def parse_spec(spec: Union[str, Dict[str, Any], None]) -> Dict[str, Any]:
    if spec is None or spec == "":
        return {"family": "embedded", "path": ""}
    if isinstance(spec, dict):
        d = dict(spec)
        if "spec" in d:
            d.update(parse_spec(d.pop("spec")))
        d.setdefault("family", "embedded")
        d.setdefault("path", "")
        return d
    s = str(spec).strip()
    fam, sep, path = s.partition(":")
    if not sep:
        fam, path = s, ""
    fam = fam.strip().lower()
    if fam not in FAMILIES:
        raise ValueError(f"unknown VLM family {fam!r} in spec {s!r}; use one of {', '.join(FAMILIES)} "
                         "(e.g. 'embedded', 'clip:/path/to/clip', 'paligemma:google/paligemma-3b-pt-224')")
    return {"family": fam, "path": path.strip()}


def _lora(opts: Dict[str, Any], default: Optional[LoraSettings]) -> Optional[LoraSettings]:
    given = opts.get("lora")
    if not given:
        return default
    base = default or LoraSettings()
    d = dict(base.__dict__)
    d.update(given)
    return LoraSettings(**d)


def _resolve_pretrained(path: str, what: str, download_hint: str) -> str:
    """A local directory, or a HF id present in the user's cache; else ModelNotFoundError."""
    if not path:
        raise ModelNotFoundError(f"{what}: no model path given; use '{download_hint}'")
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelNotFoundError(f"{what}: {p} has no config.json (not a transformers model directory)")
        return str(p)
    if p.is_absolute() or path.startswith("."):
        raise ModelNotFoundError(f"{what}: directory {p} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - hub raises several types
        raise ModelNotFoundError(
            f"{what}: {path!r} is not in the Hugging Face cache and nothing is downloaded at run time. "
            f"Download it first on a connected machine, e.g. `huggingface-cli download {path}` "
            f"(or save it with save_pretrained into a directory and pass that path). ({type(e).__name__})"
        ) from None


def load_embedded(path: str = "", lora: Optional[LoraSettings] = None, config: Optional[dict] = None, **kw):
    from rls3_ros.vlm.contrastive import EmbeddedVLM
    from rls3_ros.vlm.embedded import SpatialMatchConfig, SpatialMatchModel

    if path == "random":
        model = SpatialMatchModel(SpatialMatchConfig(**(config or {})))
        spec = "embedded:random"
    else:
        d = Path(path).expanduser() if path else embedded_base_dir(must_exist=True)
        if not (d / "config.json").is_file():
            raise ModelNotFoundError(f"embedded model directory {d} has no config.json; run `rls3 pretrain`")
        model = SpatialMatchModel.from_pretrained(str(d), local_files_only=True)
        spec = f"embedded:{d}"
    model.eval()
    return EmbeddedVLM(model, lora=lora, base_spec=spec, **kw)


def load_dual_encoder(family: str, path: str, lora: Optional[LoraSettings] = None, **kw):
    import json

    from transformers import AutoTokenizer, CLIPModel, SiglipModel

    from rls3_ros.vlm.contrastive import CLIP_MEAN, CLIP_STD, DualEncoderVLM

    hint = f"{family}:/path/to/model" if family == "siglip" else "clip:openai/clip-vit-base-patch32"
    d = _resolve_pretrained(path, f"{family} model", hint)
    cls = SiglipModel if family == "siglip" else CLIPModel
    try:
        model = cls.from_pretrained(d, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise ModelNotFoundError(f"{family} model in {d} could not be loaded as {cls.__name__}: {e}") from e
    try:
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise ModelNotFoundError(f"{family} model in {d} has no usable tokenizer files: {e}") from e
    mean, std = (CLIP_MEAN, CLIP_STD) if family == "clip" else ((0.5,) * 3, (0.5,) * 3)
    pre = Path(d) / "preprocessor_config.json"
    if pre.is_file():
        pc = json.loads(pre.read_text())
        mean = tuple(pc.get("image_mean", mean))
        std = tuple(pc.get("image_std", std))
    model.eval()
    max_len = min(64, int(getattr(model.config.text_config, "max_position_embeddings", 64)))
    return DualEncoderVLM(model, tok, model.config.vision_config.image_size, mean=mean, std=std, lora=lora,
                          base_spec=f"{family}:{d}", max_length=max_len, pad_to_max=family == "siglip", **kw)


# The project's default model: the grounded relation model (frozen EfficientNet-Lite0 grid,
# description-grounded attention, relation heads; base committed under models/grounded).
DEFAULT_MODEL = "grounded"


def load_vlm(spec: Union[str, Dict[str, Any], None] = "embedded", **options) -> SpatialVLM:
    """Build a SpatialVLM from a spec (see module docstring). Raises ModelNotFoundError / ValueError."""
    d = parse_spec(spec)
    d.update(options)
    fam, path = d.pop("family"), d.pop("path")
    adapter = d.pop("adapter", "")
    if fam == "grounded":
        from rls3_ros.vlm import grounded

        vlm = grounded.load(path, lora=d.get("lora"),
                            **{k: v for k, v in d.items() if k in ("grounding_weight", "candidate_weight", "seed")})
    elif fam == "embedded":
        vlm = load_embedded(path, lora=_lora(d, None), config=d.get("config"),
                            **{k: v for k, v in d.items() if k in ("infonce_weight", "infonce_batch", "seed")})
    elif fam in ("clip", "siglip"):
        vlm = load_dual_encoder(fam, path, lora=_lora(d, None),
                                **{k: v for k, v in d.items() if k in ("infonce_weight", "infonce_batch", "seed")})
    else:
        from rls3_ros.vlm.generative import load_paligemma

        vlm = load_paligemma(path, lora=_lora(d, None), resolve=lambda p: _resolve_pretrained(
            p, "paligemma model", "paligemma:google/paligemma-3b-pt-224"))
    if adapter:
        vlm.load_adapter(adapter)
    return vlm
