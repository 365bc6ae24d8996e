"""builtin:scenes: exact depth and normals (checked against geometry written here), invariants of
valid/invalid pixels, thin parts, determinism and the dataset's errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from asml.data import scenes
from asml.data.builtin import SPLIT_SIZES
from asml.data.scenes import (
    SCENE_TASKS,
    Box,
    BuiltinScenes,
    Cylinder,
    Rect,
    RenderedScene,
    Scene,
    Sphere,
    render,
    render_scene,
    sample_scene,
)


def camera_rays(rendered: RenderedScene) -> torch.Tensor:
    """Reference ray directions ``[3, H, W]`` (float64) through the pixel centres, z = 1."""
    _, height, width = rendered.image.shape
    u = (torch.arange(width, dtype=torch.float64) + 0.5 - rendered.cx) / rendered.focal
    v = (torch.arange(height, dtype=torch.float64) + 0.5 - rendered.cy) / rendered.focal
    return torch.stack([u.expand(height, width), v[:, None].expand(height, width), torch.ones(height, width)])


def points(rendered: RenderedScene) -> torch.Tensor:
    """Camera-frame 3-D points ``[3, H, W]`` (float64) from the depth map: p = depth * d."""
    return rendered.depth.double() * camera_rays(rendered)


def room_only(seed: int) -> Scene:
    """A sampled scene with its objects removed (floor and walls only) and the camera not turned."""
    scene = sample_scene(np.random.default_rng(seed))
    room = tuple(p for p in scene.primitives if isinstance(p, Rect))
    return dataclasses.replace(scene, primitives=room, yaw=0.0)


def floor_of(scene: Scene) -> float:
    (floor,) = [p for p in scene.primitives if isinstance(p, Rect) and p.part == "floor"]
    assert floor.axis == 1
    return floor.value


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_floor_pixels_face_up_lie_on_the_floor_and_have_the_analytic_depth(seed: int) -> None:
    rendered = render_scene(seed, 48)
    floor_index = next(i for i, p in enumerate(rendered.scene.primitives) if p.part == "floor")
    on_floor = rendered.surface == floor_index
    assert int(on_floor.sum()) > 100
    height = floor_of(rendered.scene)
    # y points down, so the floor (below the camera, at y = +h) has the normal pointing up: -y.
    normals = rendered.normals[:, on_floor]
    torch.testing.assert_close(normals, torch.tensor([[0.0], [-1.0], [0.0]]).expand_as(normals), atol=1e-6, rtol=0)
    torch.testing.assert_close(points(rendered)[1][on_floor], torch.full((int(on_floor.sum()),), height).double())
    # The floor is hit where the ray's y reaches h: z = h * f / (v + 0.5 - cy), whatever the column.
    rows = torch.arange(48, dtype=torch.float64)[:, None].expand(48, 48)[on_floor]
    expected = height * rendered.focal / (rows + 0.5 - rendered.cy)
    torch.testing.assert_close(rendered.depth[0][on_floor].double(), expected, rtol=1e-6, atol=0)


def test_an_empty_room_is_valid_below_the_horizon_and_every_plane_is_one_plane() -> None:
    for seed in range(3):
        rendered = render(room_only(seed), 40)
        rays, p = camera_rays(rendered), points(rendered)
        assert bool(rendered.valid[rays[1] > 0].all())  # every downward ray meets the floor or a wall
        for index in rendered.surface.unique().tolist():
            if index < 0:
                continue
            mask = rendered.surface == index
            normals = rendered.normals[:, mask].double()
            # One plane: a single normal, and n . p (minus the plane's distance) the same everywhere.
            torch.testing.assert_close(normals, normals[:, :1].expand_as(normals), atol=1e-6, rtol=0)
            offsets = (normals * p[:, mask]).sum(0)
            torch.testing.assert_close(offsets, offsets[:1].expand_as(offsets), atol=1e-4, rtol=1e-5)
            assert float(offsets[0]) < 0  # normal facing the camera at the origin


def test_a_sphere_has_the_analytic_silhouette_depth_and_radial_normals() -> None:
    centre, radius = torch.tensor([0.3, 0.2, 3.0], dtype=torch.float64), 0.5
    scene = room_only(7)
    scene = dataclasses.replace(scene, primitives=(*scene.primitives, Sphere((0.3, 0.2, 3.0), radius, 0, "ball")))
    rendered = render(scene, 48)
    on_sphere = rendered.surface == len(scene.primitives) - 1
    # Independent reference: the ray meets the sphere iff its distance to the centre is below r; the
    # nearer root of |t d - c|^2 = r^2 is the depth (d has z = 1).
    d = camera_rays(rendered).permute(1, 2, 0)
    a, b = (d * d).sum(-1), d @ centre
    disc = b * b - a * (centre @ centre - radius**2)
    inside = disc > 1e-9
    assert torch.equal(on_sphere[inside], torch.ones_like(on_sphere[inside]))
    assert not bool(on_sphere[disc < -1e-9].any())
    depth = (b - disc.clamp(min=0).sqrt()) / a
    torch.testing.assert_close(rendered.depth[0][on_sphere].double(), depth[on_sphere], rtol=1e-6, atol=0)
    radial = (points(rendered)[:, on_sphere] - centre[:, None]) / radius
    torch.testing.assert_close(rendered.normals[:, on_sphere].double(), radial, atol=1e-4, rtol=0)


def test_cylinders_and_boxes_have_exact_normals() -> None:
    scene = room_only(3)
    floor = floor_of(scene)
    cylinder = Cylinder(-0.5, 3.0, 0.3, floor - 0.9, floor - 0.2, 0, "drum")  # top cap below the camera
    box = Box((0.7, floor - 0.4, 3.5), (0.3, 0.4, 0.25), math.radians(30), 0, "crate")
    rendered = render(dataclasses.replace(scene, primitives=(*scene.primitives, cylinder, box)), 64)
    p, n = points(rendered), rendered.normals.double()
    drum = rendered.surface == len(scene.primitives)
    cap = drum & ((p[1] - cylinder.top).abs() < 1e-4)
    side = drum & ~cap
    assert int(cap.sum()) > 5 and int(side.sum()) > 20
    torch.testing.assert_close(n[:, cap], torch.tensor([[0.0], [-1.0], [0.0]]).double().expand(3, int(cap.sum())))
    radial = torch.stack([p[0] - cylinder.x, torch.zeros_like(p[0]), p[2] - cylinder.z]) / cylinder.radius
    torch.testing.assert_close(n[:, side], radial[:, side], atol=1e-4, rtol=0)
    # Box faces: in the box's frame (turned by yaw about y) a face normal is an axis, and the point
    # lies on that face (|local coordinate| equals the half-size).
    crate = rendered.surface == len(scene.primitives) + 1
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    to_local = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]], dtype=torch.float64)
    local_n = to_local @ n[:, crate]
    local_p = to_local @ (p[:, crate] - torch.tensor(box.centre, dtype=torch.float64)[:, None])
    axis = local_n.abs().argmax(0)
    assert set(axis.tolist()) >= {0, 1}  # a side and the top are seen
    torch.testing.assert_close(local_n.abs().amax(0), torch.ones(axis.shape, dtype=torch.float64), atol=1e-6, rtol=0)
    half = torch.tensor(box.half, dtype=torch.float64)[axis]
    torch.testing.assert_close(local_p.gather(0, axis[None])[0].abs(), half, atol=1e-4, rtol=0)


def test_valid_and_invalid_pixels_follow_the_conventions() -> None:
    dataset = BuiltinScenes("val", size=48)
    invalid = []
    for index in range(16):
        rendered = dataset.render(index)
        valid, depth, normals = rendered.valid, rendered.depth[0], rendered.normals
        assert rendered.image.dtype == torch.uint8 and rendered.image.shape == (3, 48, 48)
        assert depth.dtype == torch.float32 and normals.dtype == torch.float32
        assert torch.equal(valid, depth > 0)
        assert bool((depth[~valid] == 0).all()) and bool((normals[:, ~valid] == 0).all())
        torch.testing.assert_close(normals[:, valid].norm(dim=0), torch.ones(int(valid.sum())), atol=1e-5, rtol=0)
        facing = (normals.double() * camera_rays(rendered)).sum(0)
        assert bool((facing[valid] < 0).all())
        # No ceiling: only rays going up (y < 0) leave the room.
        assert bool((camera_rays(rendered)[1][~valid] < 0).all())
        assert bool((rendered.surface[~valid] == -1).all()) and bool((rendered.surface[valid] >= 0).all())
        invalid.append(1 - float(valid.float().mean()))
    assert 0.005 < sum(invalid) / len(invalid) < 0.3


def thin_runs(rendered: RenderedScene) -> int:
    """Row runs of 1-3 px of a leg or pole with something at least 20 cm farther on both sides."""
    depth, count = rendered.depth[0], 0
    width = depth.shape[1]
    for index, primitive in enumerate(rendered.scene.primitives):
        if primitive.part not in ("leg", "pole"):
            continue
        mask = rendered.surface == index
        for row in torch.nonzero(mask.any(1)).flatten().tolist():
            columns = torch.nonzero(mask[row]).flatten().tolist()
            starts = [c for c in columns if c - 1 not in columns]
            for start in starts:
                end = start
                while end + 1 in columns:
                    end += 1
                if end - start + 1 <= 3 and start > 0 and end < width - 1:
                    left, right = depth[row, start - 1], depth[row, end + 1]
                    count += bool(left > depth[row, start] + 0.2) and bool(right > depth[row, end] + 0.2)
    return count


def test_scenes_have_thin_parts_a_few_pixels_wide() -> None:
    dataset = BuiltinScenes("train", size=64)
    rendered = [dataset.render(index) for index in range(16)]
    radii = [p.radius for r in rendered for p in r.scene.primitives if p.part in ("leg", "pole")]
    assert len(radii) > 30 and min(radii) >= 0.01 and max(radii) <= 0.05  # 1-5 cm legs and poles
    counts = [thin_runs(r) for r in rendered]
    assert sum(c > 0 for c in counts) >= 12 and sum(counts) >= 200, counts


def test_culling_to_each_primitive_s_pixel_window_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    culled = [render_scene(seed, 48) for seed in range(6)]
    # Reference: every primitive tested against every pixel.
    monkeypatch.setattr(scenes, "_window", lambda hull, rotation, focal, cx, cy, shape: (slice(None), slice(None)))
    for seed, fast in enumerate(culled):
        full = render_scene(seed, 48)
        assert torch.equal(fast.surface, full.surface) and torch.equal(fast.depth, full.depth)
        assert torch.equal(fast.normals, full.normals) and torch.equal(fast.image, full.image)


def test_scene_images_are_textured_and_lambert_shaded() -> None:
    rendered = render_scene(11, 64)
    assert rendered.image.float()[:, rendered.valid].std() > 15  # textured, not flat
    # With flat grey materials and no noise, a pixel is albedo * (ambient + sum of I * max(0, n . l)):
    # the image carries the normals (camera not turned, so world and camera normals coincide).
    scene = dataclasses.replace(rendered.scene, yaw=0.0)
    grey = dataclasses.replace(scene.materials[0], gain=(0.0, 0.0, 0.0), offset=(0.7, 0.7, 0.7))
    scene = dataclasses.replace(scene, materials=(grey,) * len(scene.materials))
    flat = render(scene, 48)
    light = torch.full((48, 48), scene.ambient, dtype=torch.float64)
    for direction, intensity in scene.lights:
        cosine = (flat.normals.double() * torch.tensor(direction, dtype=torch.float64).view(3, 1, 1)).sum(0)
        light += intensity * cosine.clamp(min=0)
    expected = (0.7 * light * 255).clamp(0, 255)
    valid = flat.valid
    assert (flat.image.double()[:, valid] - expected[valid]).abs().max() <= 0.5 + 1e-6
    assert expected[valid].std() > 5  # the shading does vary over the scene


def test_samples_are_deterministic_and_splits_differ() -> None:
    first, again = BuiltinScenes("train", size=32), BuiltinScenes("train", size=32)
    for index in (0, 5):
        image_a, target_a = first[index]
        image_b, target_b = again[index]
        assert torch.equal(image_a, image_b) and torch.equal(target_a, target_b)
        assert torch.equal(first[index][0], image_a)
    assert not torch.equal(first[0][0], BuiltinScenes("val", size=32)[0][0])
    assert not torch.equal(first[0][0], BuiltinScenes("train", size=32, seed=1)[0][0])
    # The scene does not depend on the image size.
    assert render_scene(5, 32).scene == render_scene(5, 48).scene


def test_dataset_targets_lengths_and_errors() -> None:
    for task, channels in (("depth", 1), ("normals", 3)):
        dataset = BuiltinScenes("test", size=32, task=task)
        image, target = dataset[3]
        assert dataset.task == task and dataset.split == "test" and dataset.size == 32
        assert dataset.target_channels == channels
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert target.shape == (channels, 32, 32) and target.dtype == torch.float32
    assert SCENE_TASKS == ("depth", "normals")
    rendered = BuiltinScenes("test", size=32).render(3)
    assert torch.equal(BuiltinScenes("test", size=32, task="depth")[3][1], rendered.depth)
    assert torch.equal(BuiltinScenes("test", size=32, task="normals")[3][1], rendered.normals)
    assert {split: len(BuiltinScenes(split)) for split in SPLIT_SIZES} == {"train": 512, "val": 128, "test": 128}
    with pytest.raises(ValueError, match=r"unknown split 'dev'.*train, val, test"):
        BuiltinScenes("dev")
    with pytest.raises(ValueError, match=r"unknown task 'segmentation'.*depth, normals"):
        BuiltinScenes("train", task="segmentation")
    with pytest.raises(IndexError, match="out of range"):
        BuiltinScenes("val", size=32)[128]
