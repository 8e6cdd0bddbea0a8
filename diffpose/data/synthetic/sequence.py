"""One synthetic sequence: sample a scene, render its frames, build its PoseTrack18 ground truth.

A scene holds 1-4 annotated people (walking, jogging or standing and gesturing; some cross each
other at different depths, some look alike), optionally a far-away crowd of small unlabelled
figures covered by an ignore region, moving foreground occluders, a panning/zooming camera and a
schedule of blur/defocus bursts. Everything is drawn from one ``numpy.random.Generator`` seeded
from (seed, split, index), so a sequence is reproducible on its own and sequences can be generated
in any order or in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from diffpose.data.keypoints import NAME_TO_INDEX
from diffpose.data.synthetic import annotate, degrade, motion, render, scene
from diffpose.data.synthetic.presets import Preset
from diffpose.data.synthetic.skeleton import HEAD_RX, Body, Camera, forward_kinematics, sample_body

SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 1, "val": 2}
_FIRST_VID = {"train": 1, "val": 500001}
_SUFFIX = {"train": "mpii_train", "val": "mpii_test"}
Z_NEAR = 4.0
CROWD_OWNER, OCCLUDER_OWNER = 100, 200


def sequence_name(split: str, index: int) -> tuple[str, str]:
    """(6-digit video number, PoseTrack-style sequence name), e.g. ('000001', '000001_mpii_train')."""
    vid = f"{_FIRST_VID[split] + index:06d}"
    return vid, f"{vid}_{_SUFFIX[split]}"


@dataclass(frozen=True)
class SequenceSpec:
    split: str
    index: int
    seed: int
    preset: Preset

    @property
    def vid(self) -> str:
        return sequence_name(self.split, self.index)[0]

    @property
    def name(self) -> str:
        return sequence_name(self.split, self.index)[1]

    @property
    def nframes(self) -> int:
        return self.preset.train_frames if self.split == "train" else self.preset.val_frames

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_CODE[self.split], self.index]))


@dataclass
class Figure:
    body: Body
    look: render.Appearance
    world: dict[str, np.ndarray]


@dataclass
class Scene:
    spec: SequenceSpec
    camera: Camera
    path: scene.CameraPath
    canvas: np.ndarray
    people: list[Figure]
    crowd: list[Figure]
    occluders: list[scene.Occluder]
    schedule: degrade.Schedule
    labelled: np.ndarray  # (T,) bool


def build_scene(spec: SequenceSpec, rng: np.random.Generator) -> Scene:
    p, n = spec.preset, spec.nframes
    W, H = p.width, p.height
    cw, ch = int(round(W * scene.CANVAS_MARGIN / 2)) * 2, int(round(H * scene.CANVAS_MARGIN / 2)) * 2
    h_far, h_near = p.person_height
    focal = h_near * Z_NEAR
    cam_h = rng.uniform(0.5, 0.7)
    lo, hi = h_near * (1 - cam_h) + 0.03 * H, H * 0.98 - h_near * cam_h
    horizon_frame = rng.uniform(lo, hi) if lo < hi else (lo + hi) / 2
    camera = Camera(focal=focal, cx=cw / 2, horizon=horizon_frame + (ch - H) / 2, height=cam_h)
    bounds = motion.Bounds(z_near=Z_NEAR, z_far=focal / h_far, half_width_per_depth=(W / 2) / focal)
    canvas = scene.background(rng, cw, ch, camera.horizon)
    path = scene.camera_path(rng, n, p.fps, (W, H), (cw, ch), moving=bool(rng.random() < 0.7))

    count = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.3, 0.2]))
    crossing = spec.index == 0 or rng.random() < 0.4
    if crossing:
        count = max(count, 2)
    count = min(count, p.max_people)
    people: list[Figure] = []
    for i in range(count):
        like = people[int(rng.integers(len(people)))].look if people and rng.random() < 0.3 else None
        look = render.sample_appearance(rng, like)
        body = sample_body(rng, float(rng.uniform(0.9, 1.08)))
        if crossing and i < 2:
            ground, yaw, gait, style = _crossing_walk(rng, i, n, p.fps, bounds, body.scale)
        else:
            taken = [f.world["pelvis"][0] for f in people]
            ground, yaw, gait, style = _free_motion(rng, n, p.fps, bounds, body.scale, taken)
        pose = motion.gait_pose(rng, n, p.fps, yaw, gait, style)
        people.append(Figure(body, look, forward_kinematics(body, pose, ground)))

    crowd: list[Figure] = []
    if spec.index % 4 == 1 or rng.random() < 0.3:
        crowd = _crowd(rng, n, p.fps, bounds, focal, H)
    n_occ = 1 if spec.index % 4 == 1 else int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))
    occluders = scene.sample_occluders(rng, n_occ, n, (cw, ch), (W, H))
    schedule = degrade.sample_schedule(rng, n, count, scale=H / 240.0)
    labelled = annotate.labelled_frames(rng, spec.split, n, dense=p.train_labelled, every=p.val_every)
    return Scene(spec, camera, path, canvas, people, crowd, occluders, schedule, labelled)


def _crossing_walk(rng: np.random.Generator, i: int, n: int, fps: float, bounds: motion.Bounds, scale: float):
    """Two walkers at different depths cross each other around the middle of the sequence."""
    gait = motion.sample_gait(rng, "walk")
    speed = gait.speed * scale
    z = bounds.z_near + (bounds.z_far - bounds.z_near) * (
        rng.uniform(0.05, 0.4) if i == 0 else rng.uniform(0.55, 0.95)
    )
    direction = 1.0 if i == 0 else -1.0
    meet = rng.uniform(-0.3, 0.3) * bounds.half_width_per_depth * z
    x0 = meet - direction * speed * (n / 2) / fps
    yaw0 = direction * np.pi / 2 + rng.uniform(-0.25, 0.25)
    ground, yaw = motion.walk_path(
        rng,
        n,
        fps,
        start=(x0, z),
        yaw0=yaw0,
        speed=speed,
        bounds=bounds,
        waypoint=(meet + direction * 10.0, z + rng.uniform(-0.5, 0.5)),
    )
    return ground, yaw, gait, "walk"


def _free_motion(
    rng: np.random.Generator, n: int, fps: float, bounds: motion.Bounds, scale: float, taken: list[np.ndarray]
):
    """A walker, jogger or stander starting clear of the people in ``taken`` (their start points):
    people do not stand inside each other, they come to overlap by moving."""
    style = str(rng.choice(["walk", "jog", "stand"], p=[0.5, 0.15, 0.35]))
    gait = motion.sample_gait(rng, style)
    for _ in range(20):
        z = rng.uniform(bounds.z_near, bounds.z_far)
        lim = bounds.half_width_per_depth * z
        x = (
            rng.uniform(-0.8, 0.8) * lim
            if rng.random() > 0.15
            else rng.choice([-1, 1]) * rng.uniform(0.9, 1.2) * lim
        )
        if all(abs(x - q[0]) > 0.4 or abs(z - q[2]) > 1.0 for q in taken):
            break
    if style == "stand":
        ground = np.tile([x, 0.0, z], (n, 1))
        return ground, motion.standing_yaw(rng, n, fps), gait, style
    wx, wz = bounds.clamp_target(rng.uniform(-lim, lim), rng.uniform(bounds.z_near, bounds.z_far))
    yaw0 = np.arctan2(wx - x, -(wz - z)) + rng.uniform(-0.5, 0.5)
    ground, yaw = motion.walk_path(
        rng, n, fps, start=(x, z), yaw0=yaw0, speed=gait.speed * scale, bounds=bounds, waypoint=(wx, wz)
    )
    return ground, yaw, gait, style


def _crowd(rng: np.random.Generator, n: int, fps: float, bounds: motion.Bounds, focal: float, height: int):
    """2-5 small standing figures far away (unlabelled; covered by an ignore region)."""
    z = focal / (rng.uniform(25, 42) * height / 240.0)
    x_c = rng.uniform(-0.6, 0.6) * bounds.half_width_per_depth * z
    out = []
    for _ in range(int(rng.integers(2, 6))):
        body = sample_body(rng, float(rng.uniform(0.9, 1.05)))
        ground = np.tile([x_c + rng.uniform(-0.8, 0.8), 0.0, z + rng.uniform(-0.5, 0.5)], (n, 1))
        pose = motion.gait_pose(
            rng, n, fps, motion.standing_yaw(rng, n, fps), motion.sample_gait(rng, "stand"), "stand"
        )
        out.append(Figure(body, render.sample_appearance(rng), forward_kinematics(body, pose, ground)))
    return out


@dataclass
class FrameTruth:
    keypoints: np.ndarray  # (P, 17, 2) frame pixels
    head_boxes: np.ndarray  # (P, 4) x0, y0, x1, y1
    owner: np.ndarray  # (H, W) int16
    crowd_box: tuple[float, float, float, float] | None


def render_frame(
    sc: Scene, t: int, noise_rng: np.random.Generator, lighting: tuple[float, float] = (1.0, 0.0)
) -> tuple[np.ndarray, FrameTruth]:
    """Frame ``t`` as (H, W, 3) uint8 BGR and its ground truth; ``lighting`` = (gain, offset) of the
    final image (a per-sequence exposure)."""
    p = sc.spec.preset
    W, H = p.width, p.height

    def to_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xy, z = sc.camera.project(points)
        return sc.path.apply(t, xy), z

    image = cv2.warpAffine(
        sc.canvas, sc.path.affine(t), (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    for fig in sc.crowd + sc.people:  # shadows first: they lie on the ground behind everyone
        foot = fig.world["pelvis"][t] * [1.0, 0.0, 1.0]
        (centre,), _ = to_frame(foot[None])
        (up,), _ = to_frame((foot + [0.0, fig.body.scale, 0.0])[None])
        rx = 0.2 * float(np.linalg.norm(up - centre))
        render.draw_shadow(image, centre, rx, 0.22 * rx)
    canvas = render.Canvas(image)
    for i, fig in sorted(enumerate(sc.crowd), key=lambda f: -f[1].world["pelvis"][t, 2]):
        render.draw_person(canvas, fig.world, t, fig.body, fig.look, CROWD_OWNER + i, to_frame)
    for i, fig in sorted(enumerate(sc.people), key=lambda f: -f[1].world["pelvis"][t, 2]):
        render.draw_person(canvas, fig.world, t, fig.body, fig.look, i, to_frame)
    for i, occ in enumerate(sc.occluders):
        scene.draw_occluder(canvas, occ, t, lambda q: sc.path.apply(t, q), OCCLUDER_OWNER + i)

    kps = np.zeros((len(sc.people), 17, 2))
    heads = np.zeros((len(sc.people), 4))
    for i, fig in enumerate(sc.people):
        kps[i] = to_frame(fig.world["keypoints"][t])[0]
        heads[i] = _head_box(fig, t, kps[i], to_frame)
    crowd_box = None
    if sc.crowd:
        pts = np.concatenate([to_frame(f.world["keypoints"][t])[0] for f in sc.crowd])
        lo, hi = pts.min(0), pts.max(0)
        pad = 0.15 * (hi[1] - lo[1])
        lo, hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, [W - 1, H - 1])
        if (hi - lo).min() > 4:
            crowd_box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    sched = sc.schedule
    for i in range(len(sc.people)):
        if sched.person_blur[t, i]:
            lo, hi = kps[i].min(0), kps[i].max(0)
            degrade.blur_region(canvas.image, (lo[0], lo[1], hi[0], hi[1]), sched.person_param[t, i])
    image = degrade.blur(canvas.image, int(sched.frame_kind[t]), sched.frame_param[t])
    if lighting != (1.0, 0.0):
        image = cv2.convertScaleAbs(image, alpha=lighting[0], beta=lighting[1])
    image = degrade.add_noise(noise_rng, image, sched.noise_sigma)
    return image, FrameTruth(kps, heads, canvas.owner, crowd_box)


def _head_box(fig: Figure, t: int, kp2: np.ndarray, to_frame) -> np.ndarray:
    """Head box (x0, y0, x1, y1): the head's extent, crown to neck, about 0.16 x 0.18 of the height.

    poseval's head size is 0.6 x its diagonal, ~0.15 x the person's height here (real PoseTrack18
    GT: 0.15-0.22; docs/demo-findings.md used 0.14)."""
    S = fig.body.scale
    centre, _ = to_frame(fig.world["head_centre"][t][None])
    ppu = np.linalg.norm(to_frame(fig.world["head_centre"][t][None] + [[0, S, 0]])[0][0] - centre[0])
    half = 1.35 * HEAD_RX * ppu
    pts = np.array(
        [
            kp2[NAME_TO_INDEX["head_top"]],
            kp2[NAME_TO_INDEX["head_bottom"]],
            centre[0] - [half, 0],
            centre[0] + [half, 0],
        ]
    )
    lo, hi = pts.min(0), pts.max(0)
    lo[1] -= 0.015 * ppu
    return np.array([lo[0], lo[1], hi[0], hi[1]])


def frame_annotations(sc: Scene, t: int, truth: FrameTruth) -> tuple[list[dict], list[np.ndarray]]:
    """Annotations of the people labelled in frame ``t`` and its ignore polygons."""
    p, spec = sc.spec.preset, sc.spec
    W, H = p.width, p.height
    iid = annotate.image_id(spec.vid, t)
    anns = []
    unannotated = []  # scene people left out below: covered by ignore regions instead
    for i in range(len(sc.people)):
        pts = truth.keypoints[i]
        lab = annotate.labelled_mask(pts, W, H)
        n_in = int(lab.sum())
        if n_in == 0:
            unannotated.append(i)
            continue
        q = np.clip(np.round(pts).astype(int), 0, [W - 1, H - 1])
        own = truth.owner[q[:, 1], q[:, 0]]
        hidden = lab & (own != i) & (own != -1)
        if n_in < annotate.MIN_IN_FRAME or n_in - int(hidden.sum()) < annotate.MIN_SEEN:
            unannotated.append(i)
            continue
        by = sorted({int(o) for o in own[hidden] if 0 <= o < len(sc.people)})
        degraded = sc.schedule.degraded(t, i) or hidden.sum() >= annotate.OCCLUDED_FRACTION * n_in
        anns.append(
            annotate.person_annotation(
                points=pts,
                labelled=lab,
                head_box=tuple(truth.head_boxes[i]),
                image=iid,
                track_id=i,
                width=W,
                height=H,
                degraded=degraded,
                occluded_joints=int(hidden.sum()),
                occluded_by=by,
            )
        )
    ignore: list[np.ndarray] = []
    keep_out = [(a["bbox"][0] - 2, a["bbox"][0] + a["bbox"][2] + 2) for a in anns]
    if truth.crowd_box is not None:
        ignore = annotate.cut_boxes(truth.crowd_box, keep_out)
    for i in unannotated:  # visible but not annotated: ignored, as PoseTrack does
        ys, xs = np.nonzero(truth.owner == i)
        if len(xs) >= annotate.MIN_IGNORED_PIXELS:
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            ignore += annotate.cut_boxes(box, keep_out)
    return anns, ignore


def generate_sequence(spec: SequenceSpec) -> tuple[list[np.ndarray], dict]:
    """All frames (each (H, W, 3) uint8 BGR) and the PoseTrack18 dict of one sequence."""
    rng = spec.rng()
    sc = build_scene(spec, rng)
    noise_rng = np.random.default_rng(rng.integers(2**63))  # pixels only: GT never depends on it
    lighting = (float(noise_rng.uniform(0.7, 1.25)), float(noise_rng.uniform(-25, 25)))
    p = spec.preset
    frames, images, anns = [], [], []
    for t in range(spec.nframes):
        image, truth = render_frame(sc, t, noise_rng, lighting)
        frames.append(image)
        ignore: list[np.ndarray] = []
        if sc.labelled[t]:
            frame_anns, ignore = frame_annotations(sc, t, truth)
            anns += frame_anns
        images.append(
            annotate.image_entry(
                vid=spec.vid,
                split=spec.split,
                seq=spec.name,
                frame=t,
                nframes=spec.nframes,
                labelled=bool(sc.labelled[t]),
                width=p.width,
                height=p.height,
                ignore=ignore,
            )
        )
    return frames, {"images": images, "annotations": anns, "categories": annotate.categories()}
