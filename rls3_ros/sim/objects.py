"""Movable household object catalogue for the MuJoCo backend (pure Python, no ROS).

Each category builds MJCF asset and geom snippets for one object body. Shapes come from
robosuite's MIT-licensed meshes and textures (installed as a wheel, read from its package
folder, never downloaded) or from primitives and procedurally generated surfaces of
revolution (mug, bowl, plate, vase, pot, bottle, lamp shade).

Body frame convention: the body origin is at the bottom centre of the object (z = 0 is the
bottom), which the backend uses to rest objects on surfaces; exact extents are re-measured
from the compiled model.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

COLORS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.80, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.12, 0.30, 0.85),
    "purple": (0.50, 0.20, 0.70),
    "pink": (0.95, 0.50, 0.70),
    "white": (0.92, 0.92, 0.90),
    "black": (0.08, 0.08, 0.08),
    "brown": (0.50, 0.30, 0.12),
    "gray": (0.50, 0.50, 0.52),
    "teal": (0.05, 0.60, 0.60),
}


def robosuite_assets_dir() -> str:
    """Folder of robosuite's bundled MuJoCo assets (textures/, objects/meshes/)."""
    spec = importlib.util.find_spec("robosuite")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the MuJoCo backend needs robosuite's bundled meshes/textures: "
            "pip install --no-deps robosuite (see requirements.txt / tools/setup.sh)"
        )
    path = os.path.join(os.path.dirname(spec.origin), "models", "assets")
    if not os.path.isdir(os.path.join(path, "textures")):
        raise RuntimeError(f"robosuite assets not found under {path}")
    return path


TEXTURE_MAX_PX = 256  # renders are 160-448 px: a texture repeated over part of the view needs no more


def texture_dir(max_px: int = TEXTURE_MAX_PX) -> str:
    """robosuite's textures downsampled to at most ``max_px`` per side (cached on disk once).

    The full-size textures (up to 1450 px, 8 MB per scene) cost ~100 ms of GPU-context upload
    and PNG decoding at every scene reset, more than the rest of a reset together; at the
    render sizes used here the downsampled ones look the same (MuJoCo mipmaps them anyway).
    Written atomically per file, so concurrent processes can share the cache.
    """
    src = os.path.join(robosuite_assets_dir(), "textures")
    cache = os.environ.get("RLS3_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rls3_ros"))
    out = os.path.join(cache, f"textures-{int(max_px)}")
    os.makedirs(out, exist_ok=True)
    names = [n for n in os.listdir(src) if n.endswith(".png")]
    missing = [n for n in names if not os.path.exists(os.path.join(out, n))]
    if missing:
        import tempfile

        from PIL import Image

        for n in missing:
            with Image.open(os.path.join(src, n)) as im:
                im = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
                if max(im.size) > max_px:
                    s = max_px / max(im.size)
                    im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
                fd, tmp = tempfile.mkstemp(dir=out, suffix=".png")
                os.close(fd)
                im.save(tmp)
                os.replace(tmp, os.path.join(out, n))
    return out


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{float(v):.5g}" for v in values)


def revolution_mesh(profile: Sequence[Tuple[float, float]], segments: int = 20) -> Tuple[str, str]:
    """Vertices/faces strings of a surface of revolution about z.

    ``profile`` is a closed path of (radius, z) points (e.g. outer wall up, inner wall down);
    points with radius ~0 become a single axis vertex.
    """
    verts: List[Tuple[float, float, float]] = []
    rings: List[List[int]] = []
    ang = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    for r, z in profile:
        if r < 1e-6:
            rings.append([len(verts)])
            verts.append((0.0, 0.0, z))
        else:
            idx = []
            for a in ang:
                idx.append(len(verts))
                verts.append((r * np.cos(a), r * np.sin(a), z))
            rings.append(idx)
    faces: List[Tuple[int, int, int]] = []
    for a_ring, b_ring in zip(rings[:-1], rings[1:]):
        if len(a_ring) == 1 and len(b_ring) == 1:
            continue
        if len(a_ring) == 1:
            c = a_ring[0]
            for i in range(segments):
                faces.append((c, b_ring[(i + 1) % segments], b_ring[i]))
        elif len(b_ring) == 1:
            c = b_ring[0]
            for i in range(segments):
                faces.append((a_ring[i], a_ring[(i + 1) % segments], c))
        else:
            for i in range(segments):
                j = (i + 1) % segments
                faces.append((a_ring[i], a_ring[j], b_ring[j]))
                faces.append((a_ring[i], b_ring[j], b_ring[i]))
    return _fmt(np.asarray(verts).ravel()), " ".join(str(i) for f in faces for i in f)


@dataclass
class ObjectBuild:
    """MJCF snippets of one object instance."""

    assets: List[str] = field(default_factory=list)
    geoms: List[str] = field(default_factory=list)


class Builder:
    """Collects snippets for one object with unique asset names."""

    def __init__(self, name: str, rgb: Tuple[float, float, float], scale: float = 1.0):
        self.name = name
        self.scale = float(scale)
        self.rgb = rgb
        self.out = ObjectBuild()
        self._n = 0

    def _gname(self) -> str:
        self._n += 1
        return f"{self.name}_g{self._n}"

    def material(self, suffix: str, rgb=None, texture: Optional[str] = None, spec: float = 0.3,
                 shininess: float = 0.3, texrepeat: str = "1 1", texuniform: bool = False,
                 alpha: float = 1.0) -> str:
        mname = f"{self.name}_m{suffix}"
        rgb = self.rgb if rgb is None else rgb
        if texture:
            tname = f"{self.name}_t{suffix}"
            self.out.assets.append(f'<texture name="{tname}" type="2d" file="{texture}"/>')
            self.out.assets.append(
                f'<material name="{mname}" texture="{tname}" rgba="{_fmt(rgb)} {alpha}" specular="{spec}" '
                f'shininess="{shininess}" texrepeat="{texrepeat}" texuniform="{str(texuniform).lower()}"/>'
            )
        else:
            self.out.assets.append(
                f'<material name="{mname}" rgba="{_fmt(rgb)} {alpha}" specular="{spec}" shininess="{shininess}"/>'
            )
        return mname

    def geom(self, gtype: str, size: Sequence[float], pos=(0, 0, 0), material: str = "", extra: str = "",
             euler: Optional[Sequence[float]] = None) -> None:
        rot = f' euler="{_fmt(euler)}"' if euler is not None else ""
        size = [v * self.scale for v in size]
        pos = [v * self.scale for v in pos]
        self.out.geoms.append(
            f'<geom name="{self._gname()}" type="{gtype}" size="{_fmt(size)}" pos="{_fmt(pos)}"{rot} '
            f'material="{material}" {extra}/>'
        )

    def rev(self, suffix: str, profile, material: str, segments: int = 20, pos=(0, 0, 0)) -> None:
        v, f = revolution_mesh([(r * self.scale, z * self.scale) for r, z in profile], segments)
        pos = [p * self.scale for p in pos]
        mesh = f"{self.name}_mesh{suffix}"
        self.out.assets.append(f'<mesh name="{mesh}" vertex="{v}" face="{f}" inertia="convex"/>')
        self.out.geoms.append(
            f'<geom name="{self._gname()}" type="mesh" mesh="{mesh}" pos="{_fmt(pos)}" material="{material}"/>'
        )

    def mesh_file(self, suffix: str, file: str, scale: float, material: str, pos=(0, 0, 0), extra: str = "") -> None:
        mesh = f"{self.name}_mesh{suffix}"
        scale = scale * self.scale
        pos = [p * self.scale for p in pos]
        self.out.assets.append(f'<mesh name="{mesh}" file="{file}" scale="{scale} {scale} {scale}"/>')
        self.out.geoms.append(
            f'<geom name="{self._gname()}" type="mesh" mesh="{mesh}" pos="{_fmt(pos)}" material="{material}" {extra}/>'
        )


def _hollow(outer: Sequence[Tuple[float, float]], wall: float, floor: float) -> List[Tuple[float, float]]:
    """Closed profile of an open vessel from its outer (r, z) curve (bottom to rim)."""
    inner = [(max(r - wall, 0.002), z) for r, z in outer[1:]]
    inner = [(r, max(z, floor)) for r, z in inner]
    return [(0.0, 0.0)] + list(outer) + list(reversed(inner)) + [(0.0, floor)]


# --- category builders: build(b) adds geoms with the body origin at the bottom centre ---

def _mug(b: Builder) -> None:
    m = b.material("body", spec=0.5, shininess=0.6)
    r, h = 0.055, 0.12
    b.rev("b", _hollow([(r * 0.92, 0.0), (r, 0.01), (r, h)], 0.007, 0.012), m)
    # handle: three capsules forming a loop on +x
    b.geom("capsule", (0.009, 0.025), pos=(r + 0.025, 0, h * 0.5), material=m)
    b.geom("capsule", (0.009, 0.016), pos=(r + 0.012, 0, h * 0.5 + 0.034), material=m, euler=(0, 90, 0))
    b.geom("capsule", (0.009, 0.016), pos=(r + 0.012, 0, h * 0.5 - 0.034), material=m, euler=(0, 90, 0))


def _bowl(b: Builder) -> None:
    m = b.material("body", spec=0.4, shininess=0.5)
    outer = [(0.05, 0.0), (0.06, 0.01), (0.095, 0.035), (0.12, 0.065), (0.13, 0.085)]
    b.rev("b", _hollow(outer, 0.008, 0.012), m, segments=24)


def _plate(b: Builder) -> None:
    m = b.material("body", spec=0.5, shininess=0.6)
    outer = [(0.08, 0.0), (0.09, 0.006), (0.13, 0.016), (0.15, 0.024)]
    b.rev("b", _hollow(outer, 0.005, 0.008), m, segments=28)


def _vase(b: Builder) -> None:
    m = b.material("body", spec=0.6, shininess=0.7)
    outer = [(0.055, 0.0), (0.085, 0.06), (0.095, 0.12), (0.07, 0.2), (0.04, 0.26), (0.04, 0.30), (0.055, 0.33)]
    b.rev("b", _hollow(outer, 0.006, 0.02), m, segments=24)


def _pot(b: Builder) -> None:
    m = b.material("body", spec=0.7, shininess=0.8)
    dark = b.material("h", rgb=(0.1, 0.1, 0.1), spec=0.2)
    r, h = 0.11, 0.12
    b.rev("b", _hollow([(r * 0.95, 0.0), (r, 0.01), (r, h), (r + 0.008, h + 0.004)], 0.006, 0.01), m, segments=24)
    b.geom("box", (0.03, 0.012, 0.008), pos=(r + 0.028, 0, h - 0.02), material=dark)
    b.geom("box", (0.03, 0.012, 0.008), pos=(-r - 0.028, 0, h - 0.02), material=dark)


def _bottle(b: Builder) -> None:
    m = b.material("body", spec=0.9, shininess=0.9, alpha=1.0)
    cap = b.material("cap", rgb=(0.85, 0.75, 0.2), spec=0.6)
    outer = [(0.0, 0.0), (0.042, 0.0), (0.044, 0.01), (0.044, 0.2), (0.03, 0.25), (0.016, 0.28), (0.016, 0.33), (0.0, 0.33)]
    b.rev("b", outer, m, segments=20)
    b.geom("cylinder", (0.018, 0.012), pos=(0, 0, 0.335), material=cap)
    label = b.material("label", rgb=(0.95, 0.93, 0.85), spec=0.1)
    b.geom("cylinder", (0.0445, 0.04), pos=(0, 0, 0.11), material=label)


def _lamp(b: Builder) -> None:
    base = b.material("base", rgb=(0.15, 0.15, 0.15), spec=0.6)
    shade = b.material("shade", spec=0.1)
    b.geom("cylinder", (0.075, 0.012), pos=(0, 0, 0.012), material=base)
    b.geom("cylinder", (0.01, 0.13), pos=(0, 0, 0.15), material=base)
    outer = [(0.0, 0.24), (0.13, 0.24), (0.075, 0.40), (0.0, 0.40)]
    b.rev("s", outer, shade, segments=24)


def _book(b: Builder) -> None:
    cover = b.material("cover", spec=0.2)
    pages = b.material("pages", rgb=(0.95, 0.93, 0.85), spec=0.05)
    L, W, T = 0.12, 0.09, 0.025
    b.geom("box", (L, W, 0.004), pos=(0, 0, 0.004), material=cover)
    b.geom("box", (L, W, 0.004), pos=(0, 0, 2 * T - 0.004), material=cover)
    b.geom("box", (0.005, W, T), pos=(-L + 0.005, 0, T), material=cover)
    b.geom("box", (L - 0.008, W - 0.005, T - 0.008), pos=(0.004, 0, T), material=pages)


def _ball(b: Builder) -> None:
    m = b.material("body", spec=0.5, shininess=0.5)
    stripe = b.material("stripe", rgb=(0.95, 0.95, 0.95), spec=0.5)
    r = 0.09
    b.geom("sphere", (r,), pos=(0, 0, r), material=m, extra='condim="6" friction="1 0.05 0.05"')
    b.geom("cylinder", (r * 1.005, 0.012), pos=(0, 0, r), material=stripe, extra='contype="0" conaffinity="0"')


def _box(b: Builder) -> None:
    m = b.material("body", spec=0.1)
    tape = b.material("tape", rgb=(0.85, 0.78, 0.55), spec=0.2)
    sx, sy, sz = 0.12, 0.09, 0.08
    b.geom("box", (sx, sy, sz), pos=(0, 0, sz), material=m)
    b.geom("box", (sx + 0.001, 0.025, 0.002), pos=(0, 0, 2 * sz), material=tape, extra='contype="0" conaffinity="0"')
    b.geom("box", (0.002, 0.025, sz * 0.5), pos=(sx, 0, sz * 1.5), material=tape, extra='contype="0" conaffinity="0"')


def _plant(b: Builder) -> None:
    pot = b.material("pot", spec=0.2)
    leaf = b.material("leaf", rgb=(0.13, 0.45, 0.12), spec=0.2)
    b.rev("p", [(0.0, 0.0), (0.055, 0.0), (0.075, 0.13), (0.08, 0.14), (0.0, 0.14)], pot, segments=20)
    b.geom("ellipsoid", (0.09, 0.09, 0.11), pos=(0, 0, 0.23), material=leaf)
    b.geom("ellipsoid", (0.06, 0.06, 0.08), pos=(0.05, 0.03, 0.31), material=leaf)
    b.geom("ellipsoid", (0.06, 0.06, 0.07), pos=(-0.05, -0.02, 0.30), material=leaf)


# Round objects get rolling friction (contact dimension 6): with the default torsional-only contact
# an elongated lemon rocks on a flat surface without losing energy and never comes to rest.
ROLLING = 'condim="6" friction="0.9 0.02 0.005"'


def _mesh_category(file: str, texture: Optional[str], scale: float, texrepeat: str = "1 1",
                   texuniform: bool = False, rgb=(1.0, 1.0, 1.0), extra: str = "") -> Callable[[Builder], None]:
    def build(b: Builder) -> None:
        mat = b.material("m", rgb=rgb, texture=texture, texrepeat=texrepeat, texuniform=texuniform, spec=0.4)
        b.mesh_file("m", file, scale, mat, extra=extra)

    return build


@dataclass(frozen=True)
class Category:
    name: str  # category as used in captions
    build: Callable[[Builder], None]
    colors: Tuple[str, ...] = ()  # colour variants; () = one fixed look (described by category only)
    noun: str = ""  # description noun ("" = name)
    stackable_top: bool = False  # flat top: other objects may be placed on it


CATEGORIES: Dict[str, Category] = {
    c.name: c
    for c in [
        Category("mug", _mug, ("red", "blue", "green", "white", "yellow", "black")),
        Category("bowl", _bowl, ("yellow", "pink", "blue", "white", "green", "orange")),
        Category("plate", _plate, ("white", "blue", "yellow", "teal"), stackable_top=True),
        Category("vase", _vase, ("blue", "white", "red", "teal", "purple")),
        Category("pot", _pot, ("gray", "red", "black", "blue"), noun="small pot"),
        Category("bottle", _bottle, ("green", "brown", "blue"), noun="wine bottle"),
        Category("lamp", _lamp, ("white", "yellow", "red", "teal"), noun="lamp"),
        Category("book", _book, ("red", "blue", "green", "black", "orange"), stackable_top=True),
        Category("ball", _ball, ("red", "blue", "orange", "yellow", "purple")),
        Category("box", _box, ("brown", "white", "red", "blue"), noun="box", stackable_top=True),
        Category("plant", _plant, ("orange", "white", "blue"), noun="potted plant"),
        Category("can", _mesh_category("can.obj", "can.png", 2.3), noun="soda can"),
        Category("bread", _mesh_category("bread.obj", "bread.png", 2.6), noun="loaf of bread"),
        Category("lemon", _mesh_category("lemon.obj", "lemon.png", 3.0, extra=ROLLING), noun="lemon"),
        Category("cereal", _mesh_category("cereal.obj", "cereal.png", 1.5), noun="cereal box", stackable_top=True),
        Category("milk", _mesh_category("milk.obj", "ceramic.png", 1.7, rgb=(1.0, 1.0, 1.0)), noun="milk carton"),
    ]
}

# Which categories suit which room (the catalogue for a scene is drawn from these).
ROOM_CATEGORIES: Dict[str, Tuple[str, ...]] = {
    "kitchen": ("mug", "bowl", "plate", "pot", "bottle", "can", "bread", "lemon", "cereal", "milk", "vase", "box"),
    "living_room": ("vase", "lamp", "book", "ball", "plant", "mug", "bowl", "box", "can", "bottle", "plate", "pot"),
    "bedroom": ("lamp", "book", "ball", "box", "plant", "mug", "vase", "bottle", "can", "bowl", "lemon", "cereal"),
    "dining_room": ("plate", "bowl", "mug", "vase", "bottle", "bread", "lemon", "pot", "plant", "milk", "can", "lamp"),
}


@dataclass
class ObjectSpec:
    """One movable object instance of a scene."""

    id: str
    category: str
    color: str  # "" for fixed-look categories
    description: str


def object_description(category: str, color: str) -> str:
    cat = CATEGORIES[category]
    noun = cat.noun or cat.name
    return f"{color} {noun}" if color else noun


def choose_objects(rng: np.random.Generator, scene_type: str, n: int) -> List[ObjectSpec]:
    """``n`` objects with unique descriptions (categories repeat only with another colour)."""
    pool = list(ROOM_CATEGORIES[scene_type])
    rng.shuffle(pool)
    specs: List[ObjectSpec] = []
    used_desc = set()
    counts: Dict[str, int] = {}
    i = 0
    while len(specs) < n:
        cat_name = pool[i % len(pool)]
        i += 1
        cat = CATEGORIES[cat_name]
        if cat.colors:
            free = [c for c in cat.colors if object_description(cat_name, c) not in used_desc]
            if not free:
                continue
            color = str(free[int(rng.integers(len(free)))])
        else:
            color = ""
            if object_description(cat_name, color) in used_desc:
                continue
        desc = object_description(cat_name, color)
        used_desc.add(desc)
        k = counts.get(cat_name, 0)
        counts[cat_name] = k + 1
        specs.append(ObjectSpec(id=f"{cat_name}_{k}", category=cat_name, color=color, description=desc))
        if i > 10 * n + 50:
            raise RuntimeError("cannot choose unique objects")
    return specs


# Objects are drawn ~25 % larger than life so they stay recognisable at 224 px.
OBJECT_SCALE = 1.25


def build_object(spec: ObjectSpec, scale: float = OBJECT_SCALE) -> ObjectBuild:
    rgb = COLORS.get(spec.color, (0.8, 0.8, 0.8))
    b = Builder(spec.id, rgb, scale)
    CATEGORIES[spec.category].build(b)
    return b.out
