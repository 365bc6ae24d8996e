"""Built-in generated indoor scenes with exact depth and surface normals (``builtin:scenes``).

Every sample is a room without a ceiling (floor, back wall, two side walls, slightly turned about
the vertical axis) holding 3 to 8 pieces of furniture built from boxes, vertical cylinders and
spheres: tables and stools on thin legs, lamps (thin pole, sphere or drum shade), shelves, poles,
balls and crates. Each pixel's ray is intersected analytically with every primitive, so depth and
normals are exact, not rasterised: there is no anti-aliasing of the targets, and a table leg a
pixel wide is one pixel of leg depth next to one pixel of wall depth.

Conventions (the usual ones of depth data):

* camera: pinhole at the origin looking along +z, image x to the right and y *down*, so camera
  coordinates are x right, y down, z forward. The ray through pixel ``(u, v)`` (column, row) is
  ``d = ((u + 0.5 - cx) / f, (v + 0.5 - cy) / f, 1)``, and a hit at ``t * d`` has depth ``t``.
* depth: z-distance in metres, ``float32 [1, H, W]``; 0 where the ray leaves the room above the
  walls (no ceiling: like the holes of a real depth sensor).
* normals: unit vectors in camera coordinates facing the camera (``n . d < 0``), ``float32
  [3, H, W]``; ``(0, 0, 0)`` where the depth is invalid. The floor's normal is ``(0, -1, 0)``.
* image: ``uint8 [3, H, W]``, real pictures from scikit-image as tinted textures mapped by world
  coordinates, times Lambertian shading from one or two directional lights plus ambient light, so
  that shading carries the normals; a sky gradient where the depth is invalid.

Every sample is generated from ``(seed, split, index)`` with numpy's ``default_rng`` (no global
random state): identical on every machine and in every worker. Splits have the sizes of the other
built-in sets and never share a sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from asml.data.builtin import _SPLIT_OFFSETS, SPLIT_SIZES, _textures

__all__ = [
    "SCENE_TASKS",
    "Box",
    "BuiltinScenes",
    "Cylinder",
    "Material",
    "Rect",
    "RenderedScene",
    "Scene",
    "Sphere",
    "render",
    "render_scene",
    "sample_scene",
]

Array: TypeAlias = npt.NDArray[np.float64]
Vec3: TypeAlias = tuple[float, float, float]
DenseTransform: TypeAlias = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

SCENE_TASKS = ("depth", "normals")
_TARGET_CHANNELS = {"depth": 1, "normals": 3}
_EPS = 1e-9  # smallest ray parameter that counts as a hit (the camera is inside no primitive)
_SALT = 0x5CE7E5  # separates these samples' random streams from any other use of the same seed
_MIN_SIZE = 16


# --------------------------------------------------------------------------------------------------
# Primitives. All live in the world (room) frame, which shares the camera's origin and y axis; the
# camera is turned by ``Scene.yaw`` about y. ``intersect`` takes ray directions ``[..., 3]`` from
# the origin and returns the ray parameter of the nearest hit ``[...]`` (inf on a miss) and the
# unoriented unit normal there ``[..., 3]`` (meaningless on a miss).
# --------------------------------------------------------------------------------------------------


def _yaw_matrix(angle: float) -> Array:
    """Rotation by ``angle`` (radians) about the y axis, ``[3, 3]``: local/camera -> world."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _turn(angle: float, x: float, z: float) -> tuple[float, float]:
    """The horizontal offset ``(x, z)`` turned by ``angle`` about y (same rotation as ``_yaw_matrix``)."""
    c, s = math.cos(angle), math.sin(angle)
    return c * x + s * z, -s * x + c * z


def _dot(a: Array, b: Array) -> Array:
    dot: Array = (a * b).sum(axis=-1)
    return dot


@dataclass(frozen=True)
class Rect:
    """The plane ``p[axis] == value``, limited to ``lo <= p <= hi`` on the two other axes (may be inf)."""

    axis: int
    value: float
    lo: Vec3
    hi: Vec3
    material: int = 0
    part: str = "wall"

    def intersect(self, d: Array) -> tuple[Array, Array]:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.value / d[..., self.axis]
        hit = np.isfinite(t) & (t > _EPS)
        p = d * np.where(hit, t, 0.0)[..., None]
        for j in range(3):
            if j != self.axis:
                hit &= (p[..., j] >= self.lo[j]) & (p[..., j] <= self.hi[j])
        normal = np.zeros_like(d)
        normal[..., self.axis] = 1.0
        return np.where(hit, t, np.inf), normal

    def hull(self) -> Array | None:
        return None  # walls and floor cover much of the image: test every pixel


@dataclass(frozen=True)
class Sphere:
    """A sphere of ``radius`` around ``centre``."""

    centre: Vec3
    radius: float
    material: int = 0
    part: str = "sphere"

    def intersect(self, d: Array) -> tuple[Array, Array]:
        centre = np.asarray(self.centre)
        a = _dot(d, d)
        b = d @ centre
        disc = b * b - a * (centre @ centre - self.radius**2)
        t = (b - np.sqrt(np.maximum(disc, 0.0))) / a  # nearer root: the camera is outside
        hit = (disc >= 0) & (t > _EPS)
        t = np.where(hit, t, np.inf)
        normal = (d * np.where(hit, t, 0.0)[..., None] - centre) / self.radius
        return t, normal

    def hull(self) -> Array:
        return _corners(np.asarray(self.centre), np.full(3, self.radius))


@dataclass(frozen=True)
class Cylinder:
    """A closed vertical cylinder: axis through ``(x, ., z)``, from ``y = top`` down to ``y = bottom``
    (``top < bottom``: y points down)."""

    x: float
    z: float
    radius: float
    top: float
    bottom: float
    material: int = 0
    part: str = "cylinder"

    def intersect(self, d: Array) -> tuple[Array, Array]:
        dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
        a = dx * dx + dz * dz
        b = dx * self.x + dz * self.z
        disc = b * b - a * (self.x**2 + self.z**2 - self.radius**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (b - np.sqrt(np.maximum(disc, 0.0))) / a
        y = t * dy
        side = (disc >= 0) & (t > _EPS) & (y >= self.top) & (y <= self.bottom)
        t_hit = np.where(side, t, 0.0)
        normal = np.stack(
            [(t_hit * dx - self.x) / self.radius, np.zeros_like(dx), (t_hit * dz - self.z) / self.radius], axis=-1
        )
        t = np.where(side, t, np.inf)
        for cap in (self.top, self.bottom):
            with np.errstate(divide="ignore", invalid="ignore"):
                t_cap = cap / dy
                radial = (t_cap * dx - self.x) ** 2 + (t_cap * dz - self.z) ** 2
            closer = np.isfinite(t_cap) & (t_cap > _EPS) & (radial <= self.radius**2) & (t_cap < t)
            t = np.where(closer, t_cap, t)
            normal[closer] = (0.0, 1.0, 0.0)
        return t, normal

    def hull(self) -> Array:
        centre = np.array([self.x, (self.top + self.bottom) / 2, self.z])
        return _corners(centre, np.array([self.radius, (self.bottom - self.top) / 2, self.radius]))


@dataclass(frozen=True)
class Box:
    """A box of half-sizes ``half`` around ``centre``, turned by ``yaw`` (radians) about y."""

    centre: Vec3
    half: Vec3
    yaw: float = 0.0
    material: int = 0
    part: str = "box"

    def intersect(self, d: Array) -> tuple[Array, Array]:
        rotation = _yaw_matrix(self.yaw)
        origin = -(rotation.T @ np.asarray(self.centre))  # the camera in the box's frame
        local = d @ rotation  # row form of rotation.T @ d
        half = np.asarray(self.half)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - origin) / local
            t2 = (half - origin) / local
        entry, leave = np.minimum(t1, t2), np.maximum(t1, t2)
        near, far = entry.max(axis=-1), leave.min(axis=-1)
        hit = (near <= far) & (near > _EPS)  # NaN (ray in a face's plane) compares False: a miss
        axis = entry.argmax(axis=-1)  # the slab entered last is the face hit
        normal_local = np.zeros_like(d)
        np.put_along_axis(normal_local, axis[..., None], 1.0, axis=-1)
        return np.where(hit, near, np.inf), normal_local @ rotation.T

    def hull(self) -> Array:
        corners = _corners(np.zeros(3), np.asarray(self.half))
        turned: Array = corners @ _yaw_matrix(self.yaw).T + np.asarray(self.centre)
        return turned


Primitive: TypeAlias = Rect | Sphere | Cylinder | Box


def _corners(centre: Array, half: Array) -> Array:
    """The 8 corners ``[8, 3]`` of the axis-aligned box ``centre +- half``."""
    signs = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=np.float64) * 2 - 1
    corners: Array = centre + signs * half
    return corners


# --------------------------------------------------------------------------------------------------
# Scene description and sampling.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """A tinted picture: ``texture`` indexes ``asml.data.builtin._textures()``; one copy of the picture
    spans ``tile`` metres; ``shift`` moves it (fractions of a tile); ``albedo = picture * gain + offset``."""

    texture: int
    gain: Vec3
    offset: Vec3
    tile: float
    shift: tuple[float, float]


@dataclass(frozen=True)
class Scene:
    """Everything needed to render a sample, independent of the image size.

    ``fov``: horizontal field of view in degrees; ``yaw``: the camera's turn about y in the world
    (radians); ``lights``: directions towards each light (world frame) and intensities.
    """

    fov: float
    yaw: float
    primitives: tuple[Primitive, ...]
    materials: tuple[Material, ...]
    lights: tuple[tuple[Vec3, float], ...]
    ambient: float
    sky_top: Vec3
    sky_horizon: Vec3
    noise: float


def _vec3(values: Array) -> Vec3:
    return float(values[0]), float(values[1]), float(values[2])


def _material(rng: np.random.Generator, materials: list[Material]) -> int:
    """Append a random material, return its index."""
    materials.append(
        Material(
            texture=int(rng.integers(len(_textures()))),
            gain=_vec3(rng.uniform(0.5, 1.3, 3)),
            offset=_vec3(rng.uniform(-0.1, 0.1, 3)),
            tile=float(rng.uniform(1.5, 4.0)),
            shift=(float(rng.random()), float(rng.random())),
        )
    )
    return len(materials) - 1


def _room(rng: np.random.Generator, tan_v: float, materials: list[Material]) -> tuple[list[Primitive], float, Vec3]:
    """Floor, back and side walls; also the floor height and the room's inner bounds (left, right, back)."""
    floor = float(rng.uniform(1.0, 1.6))  # camera height above the floor (y down: the floor is at +y)
    back = float(rng.uniform(4.5, 8.0))
    left, right = (float(w) for w in rng.uniform(1.8, 3.5, 2))
    # Wall height such that the back wall's top edge lies about `sky_rows` of the image below the
    # top row: rays above it leave the room (invalid depth). Negative values mean no sky there.
    sky_rows = float(rng.uniform(-0.08, 0.2))
    top = -back * (1 - 2 * sky_rows) * tan_v
    inf = math.inf
    primitives: list[Primitive] = [
        Rect(1, floor, (-left, 0.0, -inf), (right, 0.0, back), _material(rng, materials), "floor"),
        Rect(2, back, (-left, top, 0.0), (right, floor, 0.0), _material(rng, materials), "wall"),
        Rect(0, -left, (0.0, top, -inf), (0.0, floor, back), _material(rng, materials), "wall"),
        Rect(0, right, (0.0, top, -inf), (0.0, floor, back), _material(rng, materials), "wall"),
    ]
    return primitives, floor, (left, right, back)


def _table(rng: np.random.Generator, x: float, z: float, floor: float, materials: list[Material]) -> list[Primitive]:
    """A thin slab on four thin legs (radius 2-4 cm)."""
    material, yaw = _material(rng, materials), float(rng.uniform(0, math.pi))
    width, depth = float(rng.uniform(0.8, 1.6)), float(rng.uniform(0.5, 0.9))
    height, slab = float(rng.uniform(0.65, 0.8)), float(rng.uniform(0.03, 0.06))
    radius, inset = float(rng.uniform(0.02, 0.04)), float(rng.uniform(0.03, 0.1))
    top = floor - height
    parts: list[Primitive] = [Box((x, top + slab / 2, z), (width / 2, slab / 2, depth / 2), yaw, material, "top")]
    for sx, sz in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        dx, dz = _turn(yaw, sx * (width / 2 - inset - radius), sz * (depth / 2 - inset - radius))
        parts.append(Cylinder(x + dx, z + dz, radius, top + slab, floor, material, "leg"))
    return parts


def _stool(rng: np.random.Generator, x: float, z: float, floor: float, materials: list[Material]) -> list[Primitive]:
    """A round seat on three or four thin legs."""
    material = _material(rng, materials)
    seat, height, thick = float(rng.uniform(0.15, 0.22)), float(rng.uniform(0.45, 0.75)), float(rng.uniform(0.03, 0.05))
    radius, turn = float(rng.uniform(0.015, 0.03)), float(rng.uniform(0, math.tau))
    parts: list[Primitive] = [Cylinder(x, z, seat, floor - height, floor - height + thick, material, "seat")]
    legs = int(rng.integers(3, 5))
    for k in range(legs):
        angle = turn + math.tau * k / legs
        dx, dz = 0.75 * seat * math.cos(angle), 0.75 * seat * math.sin(angle)
        parts.append(Cylinder(x + dx, z + dz, radius, floor - height + thick, floor, material, "leg"))
    return parts


def _lamp(rng: np.random.Generator, x: float, z: float, floor: float, materials: list[Material]) -> list[Primitive]:
    """A flat base, a thin pole (radius 1-2.5 cm) and a sphere or drum shade."""
    material, shade_material = _material(rng, materials), _material(rng, materials)
    base, base_height = float(rng.uniform(0.1, 0.16)), float(rng.uniform(0.02, 0.04))
    pole, height = float(rng.uniform(0.01, 0.025)), float(rng.uniform(1.2, 1.8))
    parts: list[Primitive] = [
        Cylinder(x, z, base, floor - base_height, floor, material, "base"),
        Cylinder(x, z, pole, floor - height, floor - base_height, material, "pole"),
    ]
    if rng.random() < 0.5:
        radius = float(rng.uniform(0.12, 0.2))
        parts.append(Sphere((x, floor - height - 0.6 * radius, z), radius, shade_material, "shade"))
    else:
        radius, tall = float(rng.uniform(0.12, 0.22)), float(rng.uniform(0.18, 0.3))
        parts.append(
            Cylinder(x, z, radius, floor - height - 0.7 * tall, floor - height + 0.3 * tall, shade_material, "shade")
        )
    return parts


def _shelf(rng: np.random.Generator, x: float, z: float, floor: float, materials: list[Material]) -> list[Primitive]:
    """Two side boards and three to five thin shelves (2-3 cm)."""
    material, yaw = _material(rng, materials), float(rng.uniform(0, math.pi))
    width, depth, height = float(rng.uniform(0.6, 1.2)), float(rng.uniform(0.25, 0.4)), float(rng.uniform(1.0, 2.0))
    thick = float(rng.uniform(0.02, 0.03))
    parts: list[Primitive] = []
    for side in (-1, 1):
        dx, dz = _turn(yaw, side * (width / 2 - thick / 2), 0.0)
        parts.append(
            Box((x + dx, floor - height / 2, z + dz), (thick / 2, height / 2, depth / 2), yaw, material, "side")
        )
    boards = int(rng.integers(3, 6))
    for k in range(boards):
        y = floor - thick / 2 - (height - thick) * k / (boards - 1)
        parts.append(Box((x, y, z), (width / 2 - thick, thick / 2, depth / 2), yaw, material, "board"))
    return parts


def _pole(rng: np.random.Generator, x: float, z: float, floor: float, materials: list[Material]) -> list[Primitive]:
    """A tall thin pole (radius 2-5 cm)."""
    radius, height = float(rng.uniform(0.02, 0.05)), float(rng.uniform(1.8, 3.0))
    return [Cylinder(x, z, radius, floor - height, floor, _material(rng, materials), "pole")]


def _ball(rng: np.random.Generator, x: float, z: float, floor: float, materials: list[Material]) -> list[Primitive]:
    """A ball resting on the floor."""
    radius = float(rng.uniform(0.12, 0.35))
    return [Sphere((x, floor - radius, z), radius, _material(rng, materials), "ball")]


def _crate(rng: np.random.Generator, x: float, z: float, floor: float, materials: list[Material]) -> list[Primitive]:
    """A turned box on the floor."""
    half = rng.uniform(0.15, 0.4, 3)
    yaw = float(rng.uniform(0, math.pi))
    return [Box((x, floor - float(half[1]), z), _vec3(half), yaw, _material(rng, materials), "crate")]


_Builder: TypeAlias = Callable[[np.random.Generator, float, float, float, list[Material]], list[Primitive]]
# Furniture with thin parts is the most frequent, so that thin structures matter in the metrics.
_OBJECTS: tuple[tuple[_Builder, float], ...] = (
    (_table, 0.25), (_stool, 0.15), (_lamp, 0.15), (_shelf, 0.15), (_pole, 0.1), (_ball, 0.1), (_crate, 0.1),
)  # fmt: skip
_MARGIN = 0.6  # objects' footprint centres stay this far from the walls
_NEAREST = 1.8  # metres: nearest object footprint centre


def _positions(
    rng: np.random.Generator, count: int, tan_h: float, yaw: float, bounds: Vec3
) -> list[tuple[float, float]]:
    """Footprint centres (world x, z) in view: depths stratified over the room so that objects are never
    all at the same depth, a few tries to keep them apart."""
    left, right, back = bounds
    far = back - _MARGIN
    strata = rng.permutation(count)
    placed: list[tuple[float, float]] = []
    for stratum in strata:
        for _ in range(8):
            depth = _NEAREST + (stratum + rng.random()) / count * (far - _NEAREST)
            lateral = rng.uniform(-0.85, 0.85) * depth * tan_h  # in the camera's view
            x, z = _turn(yaw, float(lateral), float(depth))
            x, z = min(max(x, -left + _MARGIN), right - _MARGIN), min(z, far)
            if all((x - px) ** 2 + (z - pz) ** 2 > 0.7**2 for px, pz in placed):
                break
        placed.append((x, z))
    return placed


def _lights(rng: np.random.Generator) -> tuple[tuple[Vec3, float], ...]:
    """One or two directional lights from above and from the camera's side of the room."""
    lights = []
    for k in range(int(rng.integers(1, 3))):
        direction = np.array([rng.uniform(-1, 1), -rng.uniform(0.6, 1.6), -rng.uniform(0.0, 1.0)])
        intensity = rng.uniform(0.6, 0.9) if k == 0 else rng.uniform(0.15, 0.35)
        lights.append((_vec3(direction / np.linalg.norm(direction)), float(intensity)))
    return tuple(lights)


def sample_scene(rng: np.random.Generator, aspect: float = 1.0) -> Scene:
    """A random room with 3 to 8 objects; ``aspect`` is the image's height / width."""
    fov = float(rng.uniform(60.0, 70.0))
    tan_h = math.tan(math.radians(fov) / 2)
    yaw = math.radians(float(rng.uniform(-15.0, 15.0)))
    materials: list[Material] = []
    primitives, floor, bounds = _room(rng, tan_h * aspect, materials)
    builders, weights = zip(*_OBJECTS, strict=True)
    probabilities = np.asarray(weights) / sum(weights)
    for x, z in _positions(rng, int(rng.integers(3, 9)), tan_h, yaw, bounds):
        builder = builders[int(rng.choice(len(builders), p=probabilities))]
        primitives.extend(builder(rng, x, z, floor, materials))
    return Scene(
        fov=fov,
        yaw=yaw,
        primitives=tuple(primitives),
        materials=tuple(materials),
        lights=_lights(rng),
        ambient=float(rng.uniform(0.2, 0.35)),
        sky_top=_vec3(rng.uniform((0.25, 0.45, 0.7), (0.45, 0.65, 0.95))),
        sky_horizon=_vec3(rng.uniform((0.75, 0.8, 0.85), (0.95, 0.95, 1.0))),
        noise=float(rng.uniform(0.005, 0.03)),
    )


# --------------------------------------------------------------------------------------------------
# Rendering.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedScene:
    """A rendered sample.

    ``image`` uint8 ``[3, H, W]``; ``depth`` float32 ``[1, H, W]`` (metres, 0 invalid); ``normals``
    float32 ``[3, H, W]`` (camera frame, unit, facing the camera, 0 invalid); ``valid`` bool
    ``[H, W]``; ``surface`` int64 ``[H, W]``: index into ``scene.primitives`` of the primitive seen,
    -1 where invalid. Pixel ``(u, v)`` looks along ``((u + 0.5 - cx) / focal, (v + 0.5 - cy) / focal, 1)``.
    """

    image: Tensor
    depth: Tensor
    normals: Tensor
    valid: Tensor
    surface: Tensor
    focal: float
    cx: float
    cy: float
    scene: Scene


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(height, width) < _MIN_SIZE:
        raise ValueError(f"image size must be at least {_MIN_SIZE} pixels a side, got {size}")
    return height, width


def _window(
    hull: Array | None, rotation: Array, focal: float, cx: float, cy: float, shape: tuple[int, int]
) -> tuple[slice, slice] | None:
    """The pixel rectangle that can see a primitive (None if none can): the projection of its hull's
    corners, exact for a convex hull in front of the camera; the whole image otherwise."""
    height, width = shape
    if hull is None:
        return slice(0, height), slice(0, width)
    camera = hull @ rotation  # row form of rotation.T @ p: world -> camera
    z = camera[:, 2]
    if z.min() <= 1e-3:
        return slice(0, height), slice(0, width)
    u, v = focal * camera[:, 0] / z + cx - 0.5, focal * camera[:, 1] / z + cy - 0.5  # pixel centre indices
    # One pixel of slack keeps rounding at the rectangle's edge from cutting off a hit.
    u0, u1 = max(math.floor(u.min()) - 1, 0), min(math.ceil(u.max()) + 1, width - 1)
    v0, v1 = max(math.floor(v.min()) - 1, 0), min(math.ceil(v.max()) + 1, height - 1)
    if u0 > u1 or v0 > v1:
        return None
    return slice(v0, v1 + 1), slice(u0, u1 + 1)


def _cast(
    primitives: tuple[Primitive, ...], rays: Array, rotation: Array, focal: float, cx: float, cy: float
) -> tuple[Array, Array, npt.NDArray[np.int64]]:
    """Nearest hits of the world-frame rays ``[H, W, 3]``: ray parameter ``[H, W]`` (inf: none), unit
    normal facing the camera ``[H, W, 3]`` (world frame) and primitive index ``[H, W]`` (-1: none)."""
    shape = rays.shape[:2]
    nearest = np.full(shape, np.inf)
    normals = np.zeros((*shape, 3))
    surface = np.full(shape, -1, dtype=np.int64)
    for index, primitive in enumerate(primitives):
        window = _window(primitive.hull(), rotation, focal, cx, cy, shape)
        if window is None:
            continue
        t, normal = primitive.intersect(rays[window])
        closer = t < nearest[window]
        nearest[window] = np.where(closer, t, nearest[window])
        normals[window] = np.where(closer[..., None], normal, normals[window])
        surface[window] = np.where(closer, index, surface[window])
    valid = np.isfinite(nearest)
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    normals *= np.where(_dot(normals, rays) > 0, -1.0, 1.0)[..., None]  # face the camera
    normals[~valid] = 0.0
    return nearest, normals, surface


@lru_cache(maxsize=4)
def _texture_bank(side: int) -> tuple[npt.NDArray[np.float64], ...]:
    """The scikit-image pictures' central squares at ``side`` px, ``[side, side, 3]`` in [0, 1]: a
    resolution matched to the image's, so that a pixel covers a texel or two (a crude mip level)."""
    bank = []
    for picture in _textures():
        _, height, width = picture.shape
        square = min(height, width)
        top, left = (height - square) // 2, (width - square) // 2
        crop = picture[None, :, top : top + square, left : left + square]
        small = F.interpolate(crop, size=(side, side), mode="area")[0]
        bank.append(small.permute(1, 2, 0).double().numpy())
    return tuple(bank)


def _mirror(index: npt.NDArray[np.int64], side: int) -> npt.NDArray[np.int64]:
    """Texel index on a mirrored tiling (no seams between copies of the picture)."""
    index = np.mod(index, 2 * side)
    return np.where(index < side, index, 2 * side - 1 - index)


def _sample(texture: Array, s: Array, r: Array) -> Array:
    """Bilinear lookup ``[N, 3]`` at continuous texel coordinates (column ``s``, row ``r``) ``[N]``."""
    side = texture.shape[0]
    x, y = s - 0.5, r - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    xa, ya = _mirror(x0.astype(np.int64), side), _mirror(y0.astype(np.int64), side)
    xb, yb = _mirror(xa + 1, side), _mirror(ya + 1, side)
    upper = texture[ya, xa] * (1 - fx) + texture[ya, xb] * fx
    lower = texture[yb, xa] * (1 - fx) + texture[yb, xb] * fx
    result: Array = upper * (1 - fy) + lower * fy
    return result


def _albedo(scene: Scene, points: Array, normals: Array, materials: npt.NDArray[np.int64], side: int) -> Array:
    """Texture colour ``[N, 3]`` of hit points ``[N, 3]`` (world frame): planar mapping on the two world
    axes across the normal's dominant axis, so walls show upright pictures and the floor a tiled one."""
    axis = np.abs(normals).argmax(axis=-1)
    rows = np.arange(len(points))
    a = points[rows, np.where(axis == 0, 2, 0)]  # x, or z on x-facing surfaces
    b = points[rows, np.where(axis == 1, 2, 1)]  # y (down, = picture rows), or z on the floor
    albedo = np.zeros_like(points)
    bank = _texture_bank(side)
    for index in np.unique(materials):
        material = scene.materials[index]
        mask = materials == index
        s = (a[mask] / material.tile + material.shift[0]) * side
        r = (b[mask] / material.tile + material.shift[1]) * side
        colour = _sample(bank[material.texture], s, r)
        albedo[mask] = np.clip(colour * np.asarray(material.gain) + np.asarray(material.offset), 0.0, 1.0)
    return albedo


def _shade(scene: Scene, normals: Array) -> Array:
    """Lambertian shading ``[N, 1]`` of unit world-frame normals ``[N, 3]``."""
    light = np.full(len(normals), scene.ambient)
    for direction, intensity in scene.lights:
        light += intensity * np.maximum(normals @ np.asarray(direction), 0.0)
    return light[:, None]


def _sky(scene: Scene, rays: Array) -> Array:
    """Sky colour ``[H, W, 3]`` by the elevation of each camera ray: horizon colour at the horizon."""
    elevation = np.clip(-rays[..., 1] / np.linalg.norm(rays, axis=-1), 0.0, 1.0)[..., None]
    blend = np.sqrt(elevation)
    sky: Array = np.asarray(scene.sky_horizon) * (1 - blend) + np.asarray(scene.sky_top) * blend
    return sky


def render(scene: Scene, size: int | tuple[int, int], rng: np.random.Generator | None = None) -> RenderedScene:
    """Ray-cast ``scene`` at ``size`` (int or (height, width)); ``rng`` draws the image noise (none without)."""
    height, width = _size_pair(size)
    focal = 0.5 * width / math.tan(math.radians(scene.fov) / 2)
    cx, cy = width / 2, height / 2
    u = (np.arange(width) + 0.5 - cx) / focal
    v = (np.arange(height) + 0.5 - cy) / focal
    camera_rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)  # [H, W, 3]
    rotation = _yaw_matrix(scene.yaw)
    rays = camera_rays @ rotation.T  # camera -> world
    t, world_normals, surface = _cast(scene.primitives, rays, rotation, focal, cx, cy)
    valid = surface >= 0

    image = _sky(scene, camera_rays)
    materials = np.array([primitive.material for primitive in scene.primitives], dtype=np.int64)[surface[valid]]
    points = rays[valid] * t[valid][:, None]
    side = int(np.clip(max(height, width), 32, 256))
    colour = _albedo(scene, points, world_normals[valid], materials, side) * _shade(scene, world_normals[valid])
    image[valid] = colour
    if rng is not None:
        image = image + rng.normal(0.0, scene.noise, image.shape)
    image_u8 = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)

    depth = np.where(valid, t, 0.0)  # the camera rays have z = 1, so the ray parameter is the depth
    camera_normals = world_normals @ rotation  # row form of rotation.T @ n: world -> camera
    return RenderedScene(
        image=torch.from_numpy(image_u8.transpose(2, 0, 1).copy()),
        depth=torch.from_numpy(depth.astype(np.float32)[None]),
        normals=torch.from_numpy(camera_normals.astype(np.float32).transpose(2, 0, 1).copy()),
        valid=torch.from_numpy(valid),
        surface=torch.from_numpy(surface),
        focal=focal,
        cx=cx,
        cy=cy,
        scene=scene,
    )


def render_scene(seed: int, size: int | tuple[int, int]) -> RenderedScene:
    """The scene of ``seed`` (>= 0) rendered at ``size`` (int or (height, width)); the same seed gives
    the same room at every size."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    height, width = _size_pair(size)
    rng = np.random.default_rng([seed, _SALT])
    scene = sample_scene(rng, aspect=height / width)
    return render(scene, (height, width), rng)


class BuiltinScenes(Dataset[tuple[Tensor, Tensor]]):
    """The built-in depth / surface-normal dataset (see the module docstring).

    Args:
        split: ``train`` (512 scenes), ``val`` (128) or ``test`` (128).
        size: side of the square images in pixels (>= 16).
        task: ``depth`` (target ``float32 [1, S, S]``, metres, 0 invalid) or ``normals`` (target
            ``float32 [3, S, S]``, unit camera-frame normals, 0 invalid).
        seed: dataset seed (>= 0); the same seed gives the same scenes everywhere.
        transform: joint transform of (image, target), e.g. ``DenseTrainTransform``; None returns
            ``uint8 [3, S, S]`` and the target.
    """

    def __init__(
        self,
        split: str,
        size: int = 64,
        task: str = "normals",
        seed: int = 0,
        transform: DenseTransform | None = None,
    ) -> None:
        if split not in SPLIT_SIZES:
            raise ValueError(f"unknown split {split!r} of builtin:scenes; choose one of {', '.join(SPLIT_SIZES)}")
        if task not in SCENE_TASKS:
            raise ValueError(f"unknown task {task!r} of builtin:scenes; choose one of {', '.join(SCENE_TASKS)}")
        if size < _MIN_SIZE:
            raise ValueError(f"size must be at least {_MIN_SIZE} pixels, got {size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.split, self.size, self.task, self.seed = split, size, task, seed
        self.target_channels = _TARGET_CHANNELS[task]
        self.transform = transform

    def __len__(self) -> int:
        return SPLIT_SIZES[self.split]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        rendered = self.render(index)
        target = rendered.depth if self.task == "depth" else rendered.normals
        return self.transform(rendered.image, target) if self.transform is not None else (rendered.image, target)

    def render(self, index: int) -> RenderedScene:
        """The whole rendered sample ``index`` (image, depth, normals, validity, camera)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for the {len(self)} scenes of {self.split}")
        return render_scene(self.seed * 10_000_019 + _SPLIT_OFFSETS[self.split] + index, self.size)
