"""Procedural indoor rooms as MJCF (pure Python, no ROS, no MuJoCo import).

World frame: z up, metres. The camera stands near y < 0 and looks toward +y; the back
wall is at ``y = back_y``; the workspace (furniture carrying the movable objects) is
around the origin. Furniture is static geoms built from primitives; geoms are named
``fur:<owner>:<n>`` where ``owner`` is the receptacle or furniture id (``floor``,
``table``, ``shelf_lower``, ...), so contacts map back to supports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.sim.objects import COLORS, ObjectSpec, build_object, choose_objects, robosuite_assets_dir, texture_dir

SCENE_TYPES: Tuple[str, ...] = ("kitchen", "living_room", "bedroom", "dining_room")

FLOOR_TEXTURES = ("wood-tiles.png", "light-gray-floor-tile.png", "gray-woodgrain.png", "wood-varnished-panels.png",
                  "light-wood.png", "dark-wood.png")
WALL_TEXTURES = ("cream-plaster.png", "gray-plaster.png", "light-gray-plaster.png", "pink-plaster.png",
                 "white-plaster.png", "yellow-plaster.png", "white-bricks.png")
WOOD_TEXTURES = ("light-wood.png", "dark-wood.png", "red-wood.png", "gray-woodgrain.png", "light-wood.png",
                 "wood-varnished-panels.png", "blue-wood.png")
FABRIC_COLORS = ((0.35, 0.38, 0.45), (0.55, 0.25, 0.20), (0.30, 0.45, 0.35), (0.60, 0.55, 0.45),
                 (0.25, 0.25, 0.30), (0.45, 0.35, 0.55))


@dataclass
class Receptacle:
    """A horizontal support surface objects may be placed on."""

    id: str
    top_z: float
    xy_low: Tuple[float, float]
    xy_high: Tuple[float, float]


@dataclass
class CameraSpec:
    position: Tuple[float, float, float]
    target: Tuple[float, float, float]
    fovy: float


@dataclass
class RoomSpec:
    """Everything the backend needs to build and run one scene."""

    scene_type: str
    seed: int
    xml: str
    camera: CameraSpec
    receptacles: List[Receptacle]
    active: List[ObjectSpec]
    container: List[ObjectSpec]
    parking: Dict[str, Tuple[float, float]]  # object id -> (x, y) floor spot outside the room
    back_y: float
    half_width: float
    furniture: List[str] = field(default_factory=list)


class _Xml:
    """Accumulates MJCF assets and world geoms for the static furniture."""

    def __init__(self) -> None:
        self.assets: List[str] = []
        self.geoms: List[str] = []
        self._tex: Dict[str, str] = {}
        self._mats = 0
        self._n: Dict[str, int] = {}

    def tex(self, file: str) -> str:
        if file not in self._tex:
            name = f"tex{len(self._tex)}"
            self.assets.append(f'<texture name="{name}" type="2d" file="{file}"/>')
            self._tex[file] = name
        return self._tex[file]

    def mat(self, rgb=(1, 1, 1), texture: Optional[str] = None, texrepeat=(1, 1), spec=0.2, shininess=0.2,
            texuniform=True, reflectance=0.0) -> str:
        self._mats += 1
        name = f"fm{self._mats}"
        t = f' texture="{self.tex(texture)}" texrepeat="{texrepeat[0]} {texrepeat[1]}" texuniform="{str(texuniform).lower()}"' if texture else ""
        self.assets.append(
            f'<material name="{name}" rgba="{rgb[0]:.3f} {rgb[1]:.3f} {rgb[2]:.3f} 1"{t} specular="{spec}" '
            f'shininess="{shininess}" reflectance="{reflectance}"/>'
        )
        return name

    def box(self, owner: str, center, half, material: str, collide: bool = True, euler=None) -> None:
        k = self._n.get(owner, 0)
        self._n[owner] = k + 1
        c = "" if collide else ' contype="0" conaffinity="0"'
        e = f' euler="{euler[0]} {euler[1]} {euler[2]}"' if euler is not None else ""
        self.geoms.append(
            f'<geom name="fur:{owner}:{k}" type="box" pos="{center[0]:.4f} {center[1]:.4f} {center[2]:.4f}" '
            f'size="{half[0]:.4f} {half[1]:.4f} {half[2]:.4f}"{e} material="{material}"{c}/>'
        )

    def cyl(self, owner: str, center, radius: float, half_h: float, material: str, collide: bool = True) -> None:
        k = self._n.get(owner, 0)
        self._n[owner] = k + 1
        c = "" if collide else ' contype="0" conaffinity="0"'
        self.geoms.append(
            f'<geom name="fur:{owner}:{k}" type="cylinder" pos="{center[0]:.4f} {center[1]:.4f} {center[2]:.4f}" '
            f'size="{radius:.4f} {half_h:.4f}" material="{material}"{c}/>'
        )


# ---------------- furniture (each returns its receptacles) ----------------

def _aabb_box(x: _Xml, owner: str, lo, hi, material: str, collide: bool = True) -> None:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    x.box(owner, (lo + hi) / 2, (hi - lo) / 2, material, collide)


def _surface(rid: str, x0: float, x1: float, y0: float, y1: float, z: float, margin: float = 0.06) -> Receptacle:
    return Receptacle(rid, float(z), (x0 + margin, y0 + margin), (x1 - margin, y1 - margin))


def table(x: _Xml, rid: str, cx, cy, w, d, h, top_mat, leg_mat, thick=0.04, leg=0.05) -> List[Receptacle]:
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - d / 2, cy + d / 2
    _aabb_box(x, rid, (x0, y0, h - thick), (x1, y1, h), top_mat)
    for lx in (x0 + 0.04, x1 - 0.04 - leg):
        for ly in (y0 + 0.04, y1 - 0.04 - leg):
            _aabb_box(x, rid + "_legs", (lx, ly, 0), (lx + leg, ly + leg, h - thick), leg_mat)
    return [_surface(rid, x0, x1, y0, y1, h)]


def cabinet(x: _Xml, rid: str, x0, x1, y0, y1, h, body_mat, top_mat, door_mat, handle_mat, doors=2,
            top_thick=0.04, overhang=0.02) -> List[Receptacle]:
    """Counter / sideboard / nightstand: a carcass with doors and a top slab."""
    _aabb_box(x, rid + "_body", (x0, y0 + 0.02, 0.0), (x1, y1, h - top_thick), body_mat)
    _aabb_box(x, rid, (x0 - overhang, y0 - overhang, h - top_thick), (x1 + overhang, y1, h), top_mat)
    w = (x1 - x0) / doors
    for i in range(doors):
        dx0, dx1 = x0 + i * w + 0.015, x0 + (i + 1) * w - 0.015
        _aabb_box(x, rid + "_door", (dx0, y0, 0.08), (dx1, y0 + 0.021, h - top_thick - 0.03), door_mat, collide=False)
        hx = dx1 - 0.05 if i % 2 == 0 else dx0 + 0.03
        _aabb_box(x, rid + "_door", (hx, y0 - 0.015, h - top_thick - 0.2), (hx + 0.02, y0, h - top_thick - 0.08),
                  handle_mat, collide=False)
    return [_surface(rid, x0 - overhang, x1 + overhang, y0 - overhang, y1, h)]


def shelf(x: _Xml, cx, cy, w, d, z1, z2, mat, back_mat) -> List[Receptacle]:
    """An open shelf unit with two levels: ``shelf_lower`` (top at z1) and ``shelf_top`` (z2)."""
    t = 0.025
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - d / 2, cy + d / 2
    _aabb_box(x, "shelf_frame", (x0, y0, 0), (x0 + t, y1, z2 - t), mat)
    _aabb_box(x, "shelf_frame", (x1 - t, y0, 0), (x1, y1, z2 - t), mat)
    _aabb_box(x, "shelf_frame", (x0 + t, y1 - 0.015, 0), (x1 - t, y1, z2 - t), back_mat)
    _aabb_box(x, "shelf_frame", (x0 + t, y0, 0), (x1 - t, y1, 0.07), mat)
    _aabb_box(x, "shelf_lower", (x0 + t, y0, z1 - t), (x1 - t, y1 - 0.015, z1), mat)
    _aabb_box(x, "shelf_top", (x0, y0, z2 - t), (x1, y1, z2), mat)
    return [
        Receptacle("shelf_lower", float(z1), (x0 + t + 0.05, y0 + 0.05), (x1 - t - 0.05, y1 - 0.06)),
        Receptacle("shelf_top", float(z2), (x0 + 0.05, y0 + 0.05), (x1 - 0.05, y1 - 0.05)),
    ]


def chair(x: _Xml, cx, cy, facing: float, mat, seat_mat) -> None:
    """A chair whose seat faces direction ``facing`` (rad, 0 = +x)."""
    s, h = 0.21, 0.45
    c, sn = np.cos(facing), np.sin(facing)
    x.box("chair", (cx, cy, h - 0.02), (s, s, 0.02), seat_mat, euler=(0, 0, np.degrees(facing)))
    for ox, oy in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        px = cx + 0.17 * (ox * c - oy * sn)
        py = cy + 0.17 * (ox * sn + oy * c)
        x.box("chair", (px, py, (h - 0.04) / 2), (0.018, 0.018, (h - 0.04) / 2), mat)
    bx, by = cx - 0.19 * c, cy - 0.19 * sn
    x.box("chair", (bx, by, h + 0.22), (0.02, s, 0.2), mat, euler=(0, 0, np.degrees(facing)))


def sofa(x: _Xml, cx, back_y, w, fabric, cushion) -> List[Receptacle]:
    d = 0.85
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, back_y - d, back_y
    _aabb_box(x, "sofa_base", (x0, y0, 0.05), (x1, y1, 0.3), fabric)
    _aabb_box(x, "sofa", (x0 + 0.17, y0, 0.3), (x1 - 0.17, y1 - 0.2, 0.44), cushion)
    _aabb_box(x, "sofa_back", (x0, y1 - 0.2, 0.3), (x1, y1, 0.85), fabric)
    _aabb_box(x, "sofa_arm", (x0, y0, 0.3), (x0 + 0.17, y1 - 0.2, 0.6), fabric)
    _aabb_box(x, "sofa_arm", (x1 - 0.17, y0, 0.3), (x1, y1 - 0.2, 0.6), fabric)
    # seam between the two seat cushions
    _aabb_box(x, "sofa_seam", (cx - 0.005, y0 - 0.002, 0.3), (cx + 0.005, y1 - 0.2, 0.441), fabric, collide=False)
    return [_surface("sofa", x0 + 0.17, x1 - 0.17, y0, y1 - 0.2, 0.44, margin=0.08)]


def bed(x: _Xml, cx, back_y, w, length, frame_mat, sheet_mat, blanket_mat, pillow_mat) -> List[Receptacle]:
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, back_y - length, back_y
    _aabb_box(x, "bed_frame", (x0, y0, 0.05), (x1, y1, 0.3), frame_mat)
    _aabb_box(x, "bed_frame", (x0, y1 - 0.06, 0.0), (x1, y1, 0.95), frame_mat)
    _aabb_box(x, "bed", (x0 + 0.03, y0 + 0.03, 0.3), (x1 - 0.03, y1 - 0.06, 0.52), sheet_mat)
    _aabb_box(x, "bed_blanket", (x0 + 0.02, y0 + 0.02, 0.4), (x1 - 0.02, y0 + 0.55 * length, 0.53), blanket_mat,
              collide=False)
    for px in (cx - w / 4, cx + w / 4):
        x.box("bed_pillow", (px, y1 - 0.25, 0.57), (w / 4 - 0.06, 0.14, 0.05), pillow_mat, collide=False)
    return [_surface("bed", x0 + 0.03, x1 - 0.03, y0 + 0.03, y1 - 0.45, 0.53, margin=0.1)]


def picture(x: _Xml, cx, back_y, z, w, h, frame_mat, art_mat) -> None:
    x.box("wall_picture", (cx, back_y - 0.015, z), (w / 2, 0.015, h / 2), frame_mat, collide=False)
    x.box("wall_picture", (cx, back_y - 0.031, z), (w / 2 - 0.04, 0.002, h / 2 - 0.04), art_mat, collide=False)


def window(x: _Xml, cx, back_y, z, w, h, frame_mat, glass_mat) -> None:
    x.box("wall_window", (cx, back_y - 0.01, z), (w / 2, 0.01, h / 2), frame_mat, collide=False)
    x.box("wall_window", (cx, back_y - 0.022, z), (w / 2 - 0.05, 0.002, h / 2 - 0.05), glass_mat, collide=False)
    x.box("wall_window", (cx, back_y - 0.026, z), (0.02, 0.002, h / 2 - 0.05), frame_mat, collide=False)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def build_room(seed: int, scene_type: str, image_size: int = 224, n_active: int = 3, n_container: int = 5,
               camera_distance: Tuple[float, float] = (1.6, 1.9), camera_height: Tuple[float, float] = (1.45, 1.75),
               fovy: Tuple[float, float] = (56.0, 62.0), timestep: float = 0.002) -> RoomSpec:
    """The MJCF and metadata of the scene for ``seed`` and ``scene_type`` (deterministic)."""
    if scene_type not in SCENE_TYPES:
        raise ValueError(f"unknown scene type {scene_type!r}; known: {', '.join(SCENE_TYPES)}")
    rng = np.random.default_rng([int(seed), SCENE_TYPES.index(scene_type)])
    x = _Xml()
    hw = _u(rng, 1.9, 2.5)
    back_y = _u(rng, 1.05, 1.35)
    wall_h = 2.6
    front_y = -3.2
    floor_tex = _pick(rng, FLOOR_TEXTURES if scene_type != "kitchen" else ("light-gray-floor-tile.png", "wood-tiles.png", "gray-woodgrain.png"))
    floor_mat = x.mat(texture=floor_tex, texrepeat=(_u(rng, 1.2, 2.5),) * 2, spec=0.3)
    wall_tint = tuple(_u(rng, 0.85, 1.0) for _ in range(3))
    wall_mat = x.mat(rgb=wall_tint, texture=_pick(rng, WALL_TEXTURES), texrepeat=(1.0, 1.0), spec=0.05)
    wood = _pick(rng, WOOD_TEXTURES)
    wood_mat = x.mat(texture=wood, texrepeat=(3, 3), spec=0.3)
    wood2_mat = x.mat(texture=_pick(rng, WOOD_TEXTURES), texrepeat=(3, 3), spec=0.3)
    dark_mat = x.mat(rgb=(0.12, 0.12, 0.12), spec=0.5)
    metal_mat = x.mat(rgb=(0.75, 0.75, 0.78), texture="steel-brushed.png", texrepeat=(2, 2), spec=0.8, shininess=0.8)
    fabric_rgb = _pick(rng, FABRIC_COLORS)
    fabric_mat = x.mat(rgb=fabric_rgb, texture="gray-felt.png", texrepeat=(4, 4), spec=0.05)
    cushion_mat = x.mat(rgb=tuple(min(1.0, c * 1.15) for c in fabric_rgb), texture="gray-felt.png",
                        texrepeat=(4, 4), spec=0.05)
    art_mat = x.mat(rgb=tuple(_u(rng, 0.2, 0.9) for _ in range(3)), texture=_pick(rng, ("clay.png", "dirt.png", "brass-ambra.png", "blue-wood.png")),
                    texrepeat=(1, 1), texuniform=False)
    glass_mat = x.mat(rgb=(0.65, 0.8, 0.95), spec=0.9, shininess=0.9)

    # floor (visual extent of the room; collisions are infinite), walls, ceiling
    x.geoms.append(f'<geom name="fur:floor:0" type="plane" pos="0 {(back_y + front_y) / 2:.3f} 0" '
                   f'size="{hw:.3f} {(back_y - front_y) / 2:.3f} 0.1" material="{floor_mat}"/>')
    _aabb_box(x, "wall", (-hw - 0.1, back_y, 0), (hw + 0.1, back_y + 0.1, wall_h), wall_mat)
    _aabb_box(x, "wall", (-hw - 0.1, front_y - 0.1, 0), (-hw, back_y, wall_h), wall_mat)
    _aabb_box(x, "wall", (hw, front_y - 0.1, 0), (hw + 0.1, back_y, wall_h), wall_mat)
    _aabb_box(x, "wall", (-hw - 0.1, front_y - 0.1, 0), (hw + 0.1, front_y, wall_h), wall_mat)
    _aabb_box(x, "ceiling", (-hw - 0.1, front_y - 0.1, wall_h), (hw + 0.1, back_y + 0.1, wall_h + 0.05), wall_mat, collide=False)
    # skirting board
    _aabb_box(x, "wall_skirt", (-hw, back_y - 0.012, 0), (hw, back_y, 0.08), x.mat(rgb=(0.9, 0.9, 0.88)), collide=False)

    side = 1.0 if rng.random() < 0.5 else -1.0  # shelf on the right (+x) or left
    rec: List[Receptacle] = []
    furniture: List[str] = ["shelf"]
    sw, sd = _u(rng, 0.75, 0.9), 0.36
    sx = side * _u(rng, 0.72, 0.85)
    z1, z2 = _u(rng, 0.42, 0.5), _u(rng, 0.92, 1.02)
    rec += shelf(x, sx, back_y - sd / 2 - 0.01, sw, sd, z1, z2, wood_mat, wood2_mat)

    if scene_type == "kitchen":
        body_rgb = _pick(rng, ((0.92, 0.92, 0.9), (0.35, 0.45, 0.55), (0.55, 0.62, 0.5), (0.85, 0.8, 0.7)))
        body = x.mat(rgb=body_rgb, spec=0.3)
        door = x.mat(rgb=tuple(c * 0.93 for c in body_rgb), spec=0.3)
        stone = x.mat(rgb=(0.9, 0.9, 0.9), texture=_pick(rng, ("ceramic.png", "gray-plaster.png", "light-gray-floor-tile.png")),
                      texrepeat=(2, 2), spec=0.6, shininess=0.6)
        cx0 = -side * hw
        cx1 = sx - side * (sw / 2 + 0.06)
        lo, hi = min(cx0, cx1), max(cx0, cx1)
        rec += cabinet(x, "counter", lo, hi, back_y - 0.62, back_y, 0.9, body, stone, door, metal_mat, doors=max(2, int((hi - lo) / 0.5)))
        # a sink and a cooktop on the counter (visual only, flush with the top)
        steel = x.mat(rgb=(0.7, 0.72, 0.75), texture="steel-scratched.png", texrepeat=(2, 2), spec=0.8, shininess=0.7)
        sink_x = lo + 0.45 if side > 0 else hi - 0.45
        _aabb_box(x, "counter_sink", (sink_x - 0.28, back_y - 0.5, 0.9), (sink_x + 0.28, back_y - 0.12, 0.9015), steel,
                  collide=False)
        _aabb_box(x, "counter_sink", (sink_x - 0.23, back_y - 0.46, 0.9), (sink_x + 0.23, back_y - 0.16, 0.902),
                  dark_mat, collide=False)
        x.cyl("counter_sink", (sink_x, back_y - 0.08, 1.0), 0.012, 0.1, steel, collide=False)
        if hi - lo > 1.5:
            hob_x = (lo + hi) / 2 + (0.25 if side > 0 else -0.25)
            _aabb_box(x, "counter_hob", (hob_x - 0.3, back_y - 0.52, 0.9), (hob_x + 0.3, back_y - 0.1, 0.9015), dark_mat,
                      collide=False)
            ring = x.mat(rgb=(0.35, 0.35, 0.35), spec=0.6)
            for dx in (-0.14, 0.14):
                for dy in (-0.1, 0.1):
                    x.cyl("counter_hob", (hob_x + dx, back_y - 0.31 + dy, 0.9017), 0.075, 0.0003, ring, collide=False)
        # upper cabinets and a fridge at the far end
        _aabb_box(x, "upper_cabinet", (lo, back_y - 0.35, 1.5), (hi, back_y, 2.1), body)
        fx = -side * (hw - 0.4)
        _aabb_box(x, "fridge", (fx - 0.38, back_y - 0.7, 0), (fx + 0.38, back_y - 0.63, 1.9), metal_mat)
        _aabb_box(x, "fridge", (fx - 0.38, back_y - 0.63, 0), (fx + 0.38, back_y, 1.9), metal_mat)
        tx, ty = _u(rng, -0.25, 0.25), _u(rng, -0.15, 0.05)
        rec += table(x, "table", tx, ty, _u(rng, 0.9, 1.1), _u(rng, 0.6, 0.7), 0.78, wood2_mat, wood2_mat)
        furniture += ["counter", "table", "fridge", "upper_cabinet"]
    elif scene_type == "living_room":
        sofa_x = -side * _u(rng, 0.15, 0.35)
        rec += sofa(x, sofa_x, back_y, _u(rng, 1.6, 1.9), fabric_mat, cushion_mat)
        rug = x.mat(rgb=tuple(_u(rng, 0.3, 0.9) for _ in range(3)), texture="gray-felt.png", texrepeat=(3, 3))
        tx, ty = _u(rng, -0.25, 0.25), _u(rng, -0.15, 0.0)
        _aabb_box(x, "rug", (tx - 0.9, ty - 0.6, 0), (tx + 0.9, ty + 0.6, 0.004), rug, collide=False)
        rec += table(x, "coffee_table", tx, ty, _u(rng, 0.9, 1.1), _u(rng, 0.5, 0.6), 0.42, wood2_mat, dark_mat, leg=0.06)
        picture(x, sofa_x, back_y, _u(rng, 1.35, 1.6), _u(rng, 0.6, 0.9), _u(rng, 0.45, 0.6), dark_mat, art_mat)
        furniture += ["sofa", "coffee_table", "rug"]
    elif scene_type == "bedroom":
        bw, bl = _u(rng, 1.3, 1.5), _u(rng, 1.9, 2.05)
        bx = -side * _u(rng, 0.6, 0.75)
        sheet = x.mat(rgb=(0.95, 0.95, 0.93), spec=0.05)
        blanket = x.mat(rgb=tuple(_u(rng, 0.2, 0.85) for _ in range(3)), texture="gray-felt.png", texrepeat=(3, 3))
        rec += bed(x, bx, back_y, bw, bl, wood_mat, sheet, blanket, sheet)
        nx = bx + side * (bw / 2 + 0.3)
        rec += cabinet(x, "nightstand", nx - 0.22, nx + 0.22, back_y - 0.42, back_y, 0.55, wood2_mat, wood2_mat, dark_mat,
                       metal_mat, doors=1)
        window(x, bx, back_y, 1.55, _u(rng, 0.9, 1.2), _u(rng, 0.7, 0.9), x.mat(rgb=(0.95, 0.95, 0.95)), glass_mat)
        furniture += ["bed", "nightstand"]
    else:  # dining_room
        tx, ty = _u(rng, -0.2, 0.2), _u(rng, 0.0, 0.15)
        tw, td = _u(rng, 1.2, 1.4), _u(rng, 0.75, 0.85)
        rec += table(x, "table", tx, ty, tw, td, 0.76, wood_mat, wood_mat)
        sb_x = -side * _u(rng, 0.6, 0.8)
        rec += cabinet(x, "sideboard", sb_x - 0.6, sb_x + 0.6, back_y - 0.45, back_y, 0.85, wood2_mat, wood2_mat, dark_mat,
                       metal_mat, doors=3)
        seat = x.mat(rgb=fabric_rgb, texture="gray-felt.png", texrepeat=(2, 2))
        for k in (-1, 1):
            chair(x, tx + k * 0.3, ty + td / 2 + 0.25, -np.pi / 2, wood2_mat, seat)
        chair(x, tx - tw / 2 - 0.28, ty, 0.0, wood2_mat, seat)
        chair(x, tx + tw / 2 + 0.28, ty, np.pi, wood2_mat, seat)
        picture(x, sb_x, back_y, _u(rng, 1.4, 1.6), _u(rng, 0.6, 0.9), _u(rng, 0.45, 0.6), dark_mat, art_mat)
        furniture += ["table", "sideboard", "chair"]

    # the floor as a receptacle: the open area in front of the furniture, inside the view
    rec.append(Receptacle("floor", 0.0, (-1.2, -0.9), (1.2, back_y - 0.1)))

    # camera: in front of the workspace looking at it
    dist = _u(rng, *camera_distance)
    cam_x = _u(rng, -0.35, 0.35)
    target = (_u(rng, -0.15, 0.15), _u(rng, 0.15, 0.35), _u(rng, 0.42, 0.58))
    cam = CameraSpec(position=(cam_x, target[1] - dist, _u(rng, *camera_height)), target=target, fovy=_u(rng, *fovy))

    # objects: actives + container (parked outside the room on the infinite floor plane)
    specs = choose_objects(rng, scene_type, n_active + n_container)
    active, container = specs[:n_active], specs[n_active:]
    parking = {s.id: (-4.0 + 1.0 * i, -8.0) for i, s in enumerate(specs)}
    obj_assets: List[str] = []
    bodies: List[str] = []
    for s in specs:
        ob = build_object(s)
        obj_assets += ob.assets
        px, py = parking[s.id]
        # gravcomp: objects start parked, out of the physics (the backend turns it off for those it
        # places; MuJoCo applies runtime gravcomp only to models compiled with some)
        bodies.append(f'<body name="{s.id}" pos="{px} {py} 0.001" gravcomp="1"><freejoint name="{s.id}_joint"/>'
                      + "".join(ob.geoms) + "</body>")

    # lights
    amb = _u(rng, 0.25, 0.4)
    dif = _u(rng, 0.45, 0.7)
    warm = _u(rng, 0.9, 1.0)
    lights = [
        f'<light name="ceiling" pos="{_u(rng, -0.8, 0.8):.2f} {_u(rng, -0.8, 0.3):.2f} 2.5" dir="0 0.3 -1" directional="false" '
        f'castshadow="false" diffuse="{dif:.2f} {dif * warm:.2f} {dif * warm * warm:.2f}" attenuation="1 0 0"/>',
        f'<light name="fill" pos="0 {-2.5:.2f} 2.0" dir="0 1 -0.5" directional="true" castshadow="false" '
        f'diffuse="{dif * 0.45:.2f} {dif * 0.45:.2f} {dif * 0.45:.2f}"/>',
    ]
    off = max(640, int(image_size))
    assets = robosuite_assets_dir()
    xml = f"""<mujoco model="rls3_{scene_type}_{seed}">
  <compiler texturedir="{texture_dir()}" meshdir="{assets}/objects/meshes" angle="degree" boundmass="0.02" boundinertia="1e-6"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="2"/>
  <size memory="20M"/>
  <visual>
    <global offwidth="{off}" offheight="{off}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="{amb:.2f} {amb:.2f} {amb:.2f}" diffuse="0.35 0.35 0.35" specular="0.05 0.05 0.05"/>
    <map znear="0.02" zfar="30"/>
  </visual>
  <default>
    <geom friction="0.9 0.02 0.002" solref="0.004 1" solimp="0.95 0.99 0.001" density="400" condim="4"/>
  </default>
  <asset>
    {''.join(x.assets)}
    {''.join(obj_assets)}
  </asset>
  <worldbody>
    {''.join(lights)}
    {''.join(x.geoms)}
    {''.join(bodies)}
  </worldbody>
</mujoco>"""
    return RoomSpec(scene_type=scene_type, seed=int(seed), xml=xml, camera=cam, receptacles=rec, active=active,
                    container=container, parking=parking, back_y=back_y, half_width=hw, furniture=furniture)
