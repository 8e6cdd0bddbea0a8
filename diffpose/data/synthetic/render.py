"""Body renderer: a person as depth-ordered, textured, tapered limbs, a torso and a head.

Each body part is a filled polygon (tapered quad with rounded joint caps) in its clothing colour,
with a lighter centre band for shading, seams/stripes that move with the limb, and a thin dark
outline. Parts are drawn far to near by their depth, so a far arm disappears behind the torso
and a near arm crosses in front of it. Alongside the colour image the renderer writes an
``owner`` map (one integer id per pixel: who is visible there) from which joint occlusion is read.

Coordinates: frame pixels (x right, y down), float; drawn with 4 bits of sub-pixel precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from diffpose.data.keypoints import NAME_TO_INDEX
from diffpose.data.synthetic.skeleton import HEAD_RX, HEAD_RY, Body

SHIFT = 4
ONE = 1 << SHIFT
Colour = tuple[int, int, int]

SKIN_TONES: tuple[Colour, ...] = (
    (188, 208, 241),
    (160, 190, 228),
    (120, 160, 210),
    (90, 130, 180),
    (60, 90, 140),
    (45, 65, 100),
)  # BGR
HAIR: tuple[Colour, ...] = ((20, 20, 25), (30, 45, 70), (40, 80, 130), (150, 190, 210), (110, 110, 115))


@dataclass(frozen=True)
class Appearance:
    skin: Colour
    hair: Colour
    shirt: Colour
    pants: Colour
    shoes: Colour
    long_sleeves: bool
    shorts: bool
    stripes: int  # 0 = plain, else stripes per part
    stripe: Colour


def _jitter(rng: np.random.Generator, c: Colour, amount: int) -> Colour:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)  # type: ignore[return-value]


def _random_colour(rng: np.random.Generator) -> Colour:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(40, 255), rng.integers(40, 240)]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])  # type: ignore[return-value]


def sample_appearance(rng: np.random.Generator, like: Appearance | None = None) -> Appearance:
    """Random clothes; ``like`` gives a look-alike (same outfit colours, slightly shifted)."""
    if like is not None:
        return Appearance(
            skin=_jitter(rng, like.skin, 12),
            hair=_jitter(rng, like.hair, 10),
            shirt=_jitter(rng, like.shirt, 18),
            pants=_jitter(rng, like.pants, 18),
            shoes=like.shoes,
            long_sleeves=like.long_sleeves,
            shorts=bool(rng.random() < 0.2),
            stripes=like.stripes if rng.random() < 0.5 else 0,
            stripe=_jitter(rng, like.stripe, 20),
        )
    return Appearance(
        skin=_jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 10),
        hair=_jitter(rng, HAIR[rng.integers(len(HAIR))], 8),
        shirt=_random_colour(rng),
        pants=_random_colour(rng) if rng.random() < 0.6 else _jitter(rng, (90, 60, 40), 20),
        shoes=_jitter(rng, (30, 30, 35), 25),
        long_sleeves=bool(rng.random() < 0.55),
        shorts=bool(rng.random() < 0.2),
        stripes=int(rng.choice([0, 0, 2, 3, 4])),
        stripe=_random_colour(rng),
    )


def _fix(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p, dtype=np.float64) * ONE).astype(np.int32)


def _shade(c: Colour, k: float) -> Colour:
    # min/max on Python floats: the same values as np.clip, ~10x faster on 3-tuples (hot in rendering)
    return tuple(int(min(max(v * k + (k - 1) * 40, 0), 255)) for v in c)  # type: ignore[return-value]


class Canvas:
    """A frame being drawn and its owner map (int16, -1 = background)."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.owner = np.full(image.shape[:2], -1, dtype=np.int16)

    def poly(self, pts: np.ndarray, colour: Colour, owner: int, *, outline: bool = True) -> None:
        p = _fix(pts).reshape(-1, 1, 2)
        cv2.fillPoly(self.image, [p], colour, cv2.LINE_AA, SHIFT)
        cv2.fillPoly(self.owner, [p], owner, cv2.LINE_8, SHIFT)
        if outline:
            cv2.polylines(self.image, [p], True, _shade(colour, 0.55), 1, cv2.LINE_AA, SHIFT)

    def disc(self, c: np.ndarray, r: float, colour: Colour, owner: int) -> None:
        if r < 0.5:
            return
        cf, rf = tuple(int(v) for v in _fix(c)), int(round(r * ONE))
        cv2.circle(self.image, cf, rf, colour, -1, cv2.LINE_AA, SHIFT)
        cv2.circle(self.owner, cf, rf, owner, -1, cv2.LINE_8, SHIFT)

    def ellipse(
        self, c: np.ndarray, axes: tuple[float, float], angle: float, colour: Colour, owner: int
    ) -> None:
        cf = tuple(int(v) for v in _fix(c))
        ax = (max(int(round(axes[0] * ONE)), 1), max(int(round(axes[1] * ONE)), 1))
        cv2.ellipse(self.image, cf, ax, angle, 0, 360, colour, -1, cv2.LINE_AA, SHIFT)
        cv2.ellipse(self.owner, cf, ax, angle, 0, 360, owner, -1, cv2.LINE_8, SHIFT)

    def line(self, a: np.ndarray, b: np.ndarray, colour: Colour, width: int) -> None:
        cv2.line(
            self.image,
            tuple(int(v) for v in _fix(a)),
            tuple(int(v) for v in _fix(b)),
            colour,
            max(1, width),
            cv2.LINE_AA,
            SHIFT,
        )


def draw_shadow(image: np.ndarray, centre: np.ndarray, rx: float, ry: float, strength: float = 0.4) -> None:
    """Darken a soft ellipse on the ground (under a person's feet); in place, not an owner."""
    h, w = image.shape[:2]
    pad = int(rx + ry) + 2
    x0, y0 = max(0, int(centre[0]) - pad), max(0, int(centre[1]) - pad)
    x1, y1 = min(w, int(centre[0]) + pad), min(h, int(centre[1]) + pad)
    if x1 - x0 < 2 or y1 - y0 < 2 or rx < 1:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    c = _fix(centre - [x0, y0])
    axes = (int(rx * ONE), max(int(ry * ONE), ONE))
    cv2.ellipse(mask, (int(c[0]), int(c[1])), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA, SHIFT)
    mask = cv2.GaussianBlur(mask, (0, 0), max(ry / 2, 0.8))
    roi = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = (roi * (1 - strength * mask[..., None])).astype(np.uint8)


def limb(
    canvas: Canvas,
    a: np.ndarray,
    b: np.ndarray,
    wa: float,
    wb: float,
    colour: Colour,
    owner: int,
    *,
    stripes: int = 0,
    stripe: Colour = (0, 0, 0),
) -> None:
    """A tapered limb from ``a`` (width ``wa``) to ``b`` (width ``wb``), pixels."""
    d = b - a
    n = np.hypot(*d)
    normal = np.array([-d[1], d[0]]) / n if n > 1e-6 else np.array([1.0, 0.0])
    canvas.disc(a, wa / 2, colour, owner)
    canvas.disc(b, wb / 2, colour, owner)
    quad = np.array([a + normal * wa / 2, b + normal * wb / 2, b - normal * wb / 2, a - normal * wa / 2])
    canvas.poly(quad, colour, owner)
    hi = (
        np.array([a + normal * wa / 7, b + normal * wb / 7, b - normal * wb / 9, a - normal * wa / 9])
        + normal * wa / 8
    )
    cv2.fillPoly(canvas.image, [_fix(hi).reshape(-1, 1, 2)], _shade(colour, 1.18), cv2.LINE_AA, SHIFT)
    for k in range(stripes):
        s = (k + 1) / (stripes + 1)
        p, w = a + s * d, wa + s * (wb - wa)
        canvas.line(p + normal * w / 2, p - normal * w / 2, stripe, max(1, int(w / 6)))


ToFrame = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Maps world points (N, 3) to frame pixels (N, 2) and depths (N,)."""


@dataclass(frozen=True)
class View:
    """One person at one frame, seen through the camera: what every part-drawing function needs."""

    kp: np.ndarray  # (17, 2) frame pixels
    kz: np.ndarray  # (17,) depths
    kp3: np.ndarray  # (17, 3) world
    forward: np.ndarray  # (3,) body axes
    left: np.ndarray
    head_up: np.ndarray
    head_centre: np.ndarray  # (3,) world
    unit: float  # pixels per world unit (the person's own height = body.scale units)


def draw_person(
    canvas: Canvas,
    world: dict[str, np.ndarray],
    t: int,
    body: Body,
    look: Appearance,
    owner: int,
    to_frame: ToFrame,
) -> None:
    """Draw frame ``t`` of a person whose world landmarks come from ``forward_kinematics``:
    every part is queued with its depth, then drawn far to near."""
    kp, kz = to_frame(world["keypoints"][t])
    view = View(
        kp,
        kz,
        world["keypoints"][t],
        world["forward"][t],
        world["left"][t],
        world["head_up"][t],
        world["head_centre"][t],
        _pixels_per_unit(to_frame, world["pelvis"][t]) * body.scale,
    )
    parts = _limb_parts(canvas, view, world, t, body, look, owner, to_frame)
    parts.append(_torso_part(canvas, view, body, look, owner, to_frame))
    parts += _head_parts(canvas, view, body, look, owner, to_frame)
    for _, draw in sorted(parts, key=lambda p: -p[0]):
        draw()


Part = tuple[float, Callable[[], None]]  # (depth, draw)


def _limb_parts(
    canvas: Canvas,
    v: View,
    world: dict[str, np.ndarray],
    t: int,
    body: Body,
    look: Appearance,
    owner: int,
    to_frame: ToFrame,
) -> list[Part]:
    ix = NAME_TO_INDEX
    parts: list[Part] = []

    def queue(
        a: np.ndarray, b: np.ndarray, depth: float, wa: float, wb: float, colour: Colour, stripes: int = 0
    ) -> None:
        def draw() -> None:
            limb(canvas, a, b, wa, wb, colour, owner, stripes=stripes, stripe=look.stripe)

        parts.append((depth, draw))

    lw = [w * v.unit for w in body.leg_width]
    aw = [w * v.unit for w in body.arm_width]
    for s, side in enumerate(("left", "right")):
        hip, knee, ankle, sh, el, wr = (
            ix[f"{side}_{j}"] for j in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")
        )
        (toe,), (toe_z,) = to_frame(world["toe"][t, s][None])
        (hand,), (hand_z,) = to_frame(world["hand"][t, s][None])
        kp, kz = v.kp, v.kz
        queue(kp[hip], kp[knee], kz[[hip, knee]].mean(), lw[0], lw[1] * 1.05, look.pants)
        queue(
            kp[knee],
            kp[ankle],
            kz[[knee, ankle]].mean(),
            lw[1],
            lw[1] * 0.75,
            look.skin if look.shorts else look.pants,
        )
        queue(kp[ankle], toe, (kz[ankle] + toe_z) / 2 - 1e-3, lw[1] * 0.8, lw[1] * 0.6, look.shoes)
        queue(kp[sh], kp[el], kz[[sh, el]].mean(), aw[0], aw[1] * 1.1, look.shirt, look.stripes)
        queue(
            kp[el],
            kp[wr],
            kz[[el, wr]].mean() - 1e-3,
            aw[1],
            aw[1] * 0.8,
            look.shirt if look.long_sleeves else look.skin,
            look.stripes if look.long_sleeves else 0,
        )
        queue(kp[wr], hand, (kz[wr] + hand_z) / 2 - 2e-3, aw[1] * 0.85, aw[1] * 0.7, look.skin)
    return parts


def _torso_part(canvas: Canvas, v: View, body: Body, look: Appearance, owner: int, to_frame: ToFrame) -> Part:
    """The torso: hull of the shoulder and hip girdles thickened front and back, shaded, striped."""
    ix = NAME_TO_INDEX
    girdle = []
    for name, sign, widen in (
        ("left_shoulder", 1, 0.02),
        ("right_shoulder", -1, 0.02),
        ("left_hip", 1, 0.03),
        ("right_hip", -1, 0.03),
    ):
        for fd in (-0.5, 0.5):
            girdle.append(
                v.kp3[ix[name]] + body.scale * (widen * sign * v.left + fd * body.torso_depth * v.forward)
            )
    girdle_px, girdle_z = to_frame(np.array(girdle))
    hull = cv2.convexHull(girdle_px.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    ls, rs, lh, rh = (v.kp[ix[n]] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))

    def draw() -> None:
        canvas.poly(hull, look.shirt, owner)
        top, bottom = (ls + rs) / 2, (lh + rh) / 2
        d = bottom - top
        nrm = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6)
        band = 0.25 * max(np.linalg.norm(ls - rs), 0.1 * v.unit)
        hi = np.array(
            [top + nrm * band, bottom + nrm * band, bottom - nrm * band * 0.3, top - nrm * band * 0.3]
        )
        hi = 0.9 * hi + 0.1 * (top + bottom) / 2
        cv2.fillPoly(canvas.image, [_fix(hi).reshape(-1, 1, 2)], _shade(look.shirt, 1.12), cv2.LINE_AA, SHIFT)
        for k in range(look.stripes):
            s = (k + 1) / (look.stripes + 1)
            canvas.line(ls + s * (lh - ls), rs + s * (rh - rs), look.stripe, max(1, int(0.025 * v.unit)))
        canvas.line(lh, rh, _shade(look.pants, 0.7), max(1, int(0.03 * v.unit)))  # belt

    return float(girdle_z.mean()), draw


def _head_parts(
    canvas: Canvas, v: View, body: Body, look: Appearance, owner: int, to_frame: ToFrame
) -> list[Part]:
    """Neck, and a head of two ellipses (face forward, hair back and up) ordered by depth, so the
    face shows from the front, hair from behind and both in profile; eyes and nose from the front."""
    ix = NAME_TO_INDEX
    S, f, hu = body.scale, v.forward, v.head_up
    (centre,), (centre_z,) = to_frame(v.head_centre[None])
    neck_w = 0.055 * v.unit

    def neck() -> None:
        limb(canvas, v.kp[ix["head_bottom"]], centre, neck_w, neck_w, look.skin, owner)

    blobs, blob_z = to_frame(
        np.array([v.head_centre + 0.012 * S * f, v.head_centre - 0.018 * S * f + 0.012 * S * hu])
    )
    up = v.kp[ix["head_top"]] - centre
    angle = float(np.degrees(np.arctan2(up[0], -up[1])))
    rx, ry = HEAD_RX * v.unit, HEAD_RY * v.unit

    def head() -> None:
        pieces = [(blob_z[0], blobs[0], look.skin, 1.0), (blob_z[1], blobs[1], look.hair, 0.97)]
        for _, c, col, k in sorted(pieces, key=lambda p: -p[0]):
            canvas.ellipse(c, (rx * k, ry * k), angle, col, owner)
        if f[2] < -0.25:  # facing the camera
            eyes, _ = to_frame(
                np.array([v.head_centre + S * (0.05 * f + s * 0.024 * v.left + 0.012 * hu) for s in (1, -1)])
            )
            for e in eyes:
                canvas.disc(e, max(0.6, 0.008 * v.unit), (30, 30, 30), owner)
            canvas.disc(v.kp[ix["nose"]], max(0.6, 0.01 * v.unit), _shade(look.skin, 0.8), owner)

    return [(float(v.kz[ix["head_bottom"]]) + 1e-4, neck), (float(centre_z) - 0.05 * S, head)]


def _pixels_per_unit(to_frame: ToFrame, at: np.ndarray) -> float:
    pts, _ = to_frame(np.array([at, at + np.array([0.0, 1.0, 0.0])]))
    return float(np.linalg.norm(pts[1] - pts[0]))
