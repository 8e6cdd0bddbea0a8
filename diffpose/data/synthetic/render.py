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
    (188, 208, 241), (160, 190, 228), (120, 160, 210), (90, 130, 180), (60, 90, 140), (45, 65, 100),
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
            skin=_jitter(rng, like.skin, 12), hair=_jitter(rng, like.hair, 10), shirt=_jitter(rng, like.shirt, 18),
            pants=_jitter(rng, like.pants, 18), shoes=like.shoes, long_sleeves=like.long_sleeves,
            shorts=bool(rng.random() < 0.2), stripes=like.stripes if rng.random() < 0.5 else 0,
            stripe=_jitter(rng, like.stripe, 20),
        )
    return Appearance(
        skin=_jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 10),
        hair=_jitter(rng, HAIR[rng.integers(len(HAIR))], 8),
        shirt=_random_colour(rng), pants=_random_colour(rng) if rng.random() < 0.6 else _jitter(rng, (90, 60, 40), 20),
        shoes=_jitter(rng, (30, 30, 35), 25), long_sleeves=bool(rng.random() < 0.55), shorts=bool(rng.random() < 0.2),
        stripes=int(rng.choice([0, 0, 2, 3, 4])), stripe=_random_colour(rng),
    )


def _fix(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p, dtype=np.float64) * ONE).astype(np.int32)


def _shade(c: Colour, k: float) -> Colour:
    return tuple(int(np.clip(v * k + (k - 1) * 40, 0, 255)) for v in c)  # type: ignore[return-value]


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

    def ellipse(self, c: np.ndarray, axes: tuple[float, float], angle: float, colour: Colour, owner: int) -> None:
        cf = tuple(int(v) for v in _fix(c))
        ax = (max(int(round(axes[0] * ONE)), 1), max(int(round(axes[1] * ONE)), 1))
        cv2.ellipse(self.image, cf, ax, angle, 0, 360, colour, -1, cv2.LINE_AA, SHIFT)
        cv2.ellipse(self.owner, cf, ax, angle, 0, 360, owner, -1, cv2.LINE_8, SHIFT)

    def line(self, a: np.ndarray, b: np.ndarray, colour: Colour, width: int) -> None:
        cv2.line(self.image, tuple(int(v) for v in _fix(a)), tuple(int(v) for v in _fix(b)), colour,
                 max(1, width), cv2.LINE_AA, SHIFT)


def limb(canvas: Canvas, a: np.ndarray, b: np.ndarray, wa: float, wb: float, colour: Colour, owner: int,
         *, stripes: int = 0, stripe: Colour = (0, 0, 0)) -> None:
    """A tapered limb from ``a`` (width ``wa``) to ``b`` (width ``wb``), pixels."""
    d = b - a
    n = np.hypot(*d)
    normal = np.array([-d[1], d[0]]) / n if n > 1e-6 else np.array([1.0, 0.0])
    canvas.disc(a, wa / 2, colour, owner)
    canvas.disc(b, wb / 2, colour, owner)
    quad = np.array([a + normal * wa / 2, b + normal * wb / 2, b - normal * wb / 2, a - normal * wa / 2])
    canvas.poly(quad, colour, owner)
    hi = np.array([a + normal * wa / 7, b + normal * wb / 7, b - normal * wb / 9, a - normal * wa / 9]) + normal * wa / 8
    cv2.fillPoly(canvas.image, [_fix(hi).reshape(-1, 1, 2)], _shade(colour, 1.18), cv2.LINE_AA, SHIFT)
    for k in range(stripes):
        s = (k + 1) / (stripes + 1)
        p, w = a + s * d, wa + s * (wb - wa)
        canvas.line(p + normal * w / 2, p - normal * w / 2, stripe, max(1, int(w / 6)))


def draw_person(canvas: Canvas, world: dict[str, np.ndarray], t: int, body: Body, look: Appearance, owner: int,
                to_frame: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
    """Draw frame ``t`` of a person whose world landmarks come from ``forward_kinematics``.

    ``to_frame`` maps world points (N, 3) to frame pixels (N, 2) and depths (N,).
    """
    kp3 = world["keypoints"][t]
    f, l, hu = world["forward"][t], world["left"][t], world["head_up"][t]  # noqa: E741
    S = body.scale
    kp, kz = to_frame(kp3)
    px_per_unit = _pixels_per_unit(to_frame, world["pelvis"][t])
    ix = NAME_TO_INDEX
    parts: list[tuple[float, Callable[[], None]]] = []

    def add(depth: float, fn: Callable[[], None]) -> None:
        parts.append((depth, fn))

    for s, side in enumerate(("left", "right")):
        hip, knee, ankle = (ix[f"{side}_{j}"] for j in ("hip", "knee", "ankle"))
        sh, el, wr = (ix[f"{side}_{j}"] for j in ("shoulder", "elbow", "wrist"))
        toe, tz = to_frame(world["toe"][t, s][None])
        hand, hz = to_frame(world["hand"][t, s][None])
        lw, aw = [w * S * px_per_unit for w in body.leg_width], [w * S * px_per_unit for w in body.arm_width]
        shin_col = look.skin if look.shorts else look.pants
        fore_col = look.shirt if look.long_sleeves else look.skin
        st, sc = look.stripes, look.stripe
        add(kz[[hip, knee]].mean(), lambda hip=hip, knee=knee, lw=lw: limb(canvas, kp[hip], kp[knee], lw[0], lw[1] * 1.05, look.pants, owner))
        add(kz[[knee, ankle]].mean(), lambda knee=knee, ankle=ankle, lw=lw, c=shin_col: limb(canvas, kp[knee], kp[ankle], lw[1], lw[1] * 0.75, c, owner))
        add((kz[ankle] + tz[0]) / 2 - 1e-3, lambda ankle=ankle, toe=toe, lw=lw: limb(canvas, kp[ankle], toe[0], lw[1] * 0.8, lw[1] * 0.6, look.shoes, owner))
        add(kz[[sh, el]].mean(), lambda sh=sh, el=el, aw=aw: limb(canvas, kp[sh], kp[el], aw[0], aw[1] * 1.1, look.shirt, owner, stripes=st, stripe=sc))
        add(kz[[el, wr]].mean() - 1e-3, lambda el=el, wr=wr, aw=aw, c=fore_col: limb(canvas, kp[el], kp[wr], aw[1], aw[1] * 0.8, c, owner, stripes=st if look.long_sleeves else 0, stripe=sc))
        add((kz[wr] + hz[0]) / 2 - 2e-3, lambda wr=wr, hand=hand, aw=aw: limb(canvas, kp[wr], hand[0], aw[1] * 0.85, aw[1] * 0.7, look.skin, owner))

    # torso: hull of the shoulder and hip girdles thickened front/back
    girdle = []
    for name, sign, widen in (("left_shoulder", 1, 0.02), ("right_shoulder", -1, 0.02),
                              ("left_hip", 1, 0.03), ("right_hip", -1, 0.03)):
        for fd in (-0.5, 0.5):
            girdle.append(kp3[ix[name]] + S * (widen * sign * l + fd * body.torso_depth * f))
    girdle_px, gz = to_frame(np.array(girdle))
    hull = cv2.convexHull(girdle_px.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    torso_depth = float(gz.mean())

    def torso() -> None:
        canvas.poly(hull, look.shirt, owner)
        top = (kp[ix["left_shoulder"]] + kp[ix["right_shoulder"]]) / 2
        bottom = (kp[ix["left_hip"]] + kp[ix["right_hip"]]) / 2
        centre = (top + bottom) / 2
        w = np.linalg.norm(kp[ix["left_shoulder"]] - kp[ix["right_shoulder"]])
        d = bottom - top
        nrm = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6)
        band = 0.25 * max(w, 0.1 * S * px_per_unit)
        hi = np.array([top + nrm * band, bottom + nrm * band, bottom - nrm * band * 0.3, top - nrm * band * 0.3])
        cv2.fillPoly(canvas.image, [_fix(0.9 * hi + 0.1 * centre).reshape(-1, 1, 2)], _shade(look.shirt, 1.12), cv2.LINE_AA, SHIFT)
        for k in range(look.stripes):
            s = (k + 1) / (look.stripes + 1)
            a = kp[ix["left_shoulder"]] + s * (kp[ix["left_hip"]] - kp[ix["left_shoulder"]])
            b = kp[ix["right_shoulder"]] + s * (kp[ix["right_hip"]] - kp[ix["right_shoulder"]])
            canvas.line(a, b, look.stripe, max(1, int(0.025 * S * px_per_unit)))
        belt = (kp[ix["left_hip"]], kp[ix["right_hip"]])
        canvas.line(belt[0], belt[1], _shade(look.pants, 0.7), max(1, int(0.03 * S * px_per_unit)))

    add(torso_depth, torso)
    # neck and head
    head_c3 = world["head_centre"][t]
    neck_w = 0.055 * S * px_per_unit
    add(kz[ix["head_bottom"]] + 1e-4, lambda: limb(canvas, kp[ix["head_bottom"]], to_frame(head_c3[None])[0][0], neck_w, neck_w, look.skin, owner))
    face_c, fz = to_frame(np.array([head_c3 + 0.012 * S * f, head_c3 - 0.018 * S * f + 0.012 * S * hu]))
    top2d = kp[ix["head_top"]]
    up = top2d - to_frame(head_c3[None])[0][0]
    angle = float(np.degrees(np.arctan2(up[0], -up[1])))
    rx, ry = HEAD_RX * S * px_per_unit, HEAD_RY * S * px_per_unit

    def head() -> None:
        pieces = [(fz[0], face_c[0], look.skin, 1.0), (fz[1], face_c[1], look.hair, 0.97)]
        for _, c, col, k in sorted(pieces, key=lambda p: -p[0]):
            canvas.ellipse(c, (rx * k, ry * k), angle, col, owner)
        if f[2] < -0.25:  # facing the camera: eyes and nose
            eyes, ez = to_frame(np.array([head_c3 + S * (0.05 * f + s * 0.024 * l + 0.012 * hu) for s in (1, -1)]))
            for e in eyes:
                canvas.disc(e, max(0.6, 0.008 * S * px_per_unit), (30, 30, 30), owner)
            canvas.disc(kp[ix["nose"]], max(0.6, 0.01 * S * px_per_unit), _shade(look.skin, 0.8), owner)

    add(float(to_frame(head_c3[None])[1][0]) - 0.05 * S, head)
    for _, fn in sorted(parts, key=lambda p: -p[0]):
        fn()


def _pixels_per_unit(to_frame: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], at: np.ndarray) -> float:
    pts, _ = to_frame(np.array([at, at + np.array([0.0, 1.0, 0.0])]))
    return float(np.linalg.norm(pts[1] - pts[0]))
