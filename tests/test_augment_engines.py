"""The two augmentation engines draw the same random changes for every preset (issue 12).

``build_augment`` (albumentations, per image on CPU workers) and ``BatchAugment`` (one
``grid_sample`` per batch on the device) read the same preset flags. Each test here augments a
probe image ``N`` times with each engine, *measures* what was done from the output pixels, and
compares the two samples:

- geometry: a probe with one Gaussian dot per channel (both engines warp all channels with the
  same parameters), so the three dot centroids give the affine map exactly: flip (sign of the
  determinant), rotation angle, zoom (sqrt of |det|), anisotropy (log of the ratio of the
  singular values), shift of the centre (as a fraction of the side); a fourth channel holds a
  one-pixel frame along the border, whose brightness after the warp measures what the engine
  invents beyond the border (reflection);
- brightness/contrast: a horizontal grey ramp; a line fitted to output against input values on
  the unclipped pixels gives the gain (contrast) and the change of the mean grey level
  (brightness, on the 0..1 scale);
- erasing: a flat mid-grey face, in which erased pixels are exactly 0: erased fraction of the
  face, log(h / w) of the erased box, and its centre.

The probability of each step (flip, affine, brightness/contrast, erasing) is the fraction of
outputs where it is seen; the continuous parameters are compared over the outputs where their
step was applied. Every tolerance is ``Z`` = 5 standard errors, estimated from the samples
(the seeds are fixed, so the test is deterministic; seeds 1, 2, 3 and 12 all pass):

- probabilities: the two engines within 5 standard errors of a difference of proportions (0.065
  at p=0.5, N=3000), and each within 5 standard errors of the preset's flag (0.046);
- distributions: two-sample Kolmogorov-Smirnov p-value above 1e-3 (the shape); means within 5
  standard errors of their difference; the 1st and 99th percentiles (the range, which KS hardly
  sees) within 5 standard errors, sqrt(p(1-p)/n) / density with the density read from the
  quantile spacing (at least 0.5% of the configured span); standard deviations within 5
  standard errors (from the kurtosis) of each other.

With these, a batched engine whose rotation or zoom range is 5% narrower, shift range 10%
narrower, brightness/contrast range 7% narrower, flip rate 0.44 instead of 0.5 or erasing rate
0.2 instead of 0.25 fails; an affine probability 10% lower (0.54 for 0.6) does not.
Parameters a preset leaves off (no shift in ``light``; anisotropy, which no preset asks for) must
stay at measurement noise in both engines (their interpolation noise differs, so no KS there).

The camera steps (issue 15), each measured alone, on outputs rounded to whole grey levels:

- perspective: four dots (one per channel) give the homography, and so where each corner of the
  frame came from: eight corner moves, each uniform in +-``perspective_scale`` of the side;
- crop jitter: the geometry probe: zoom, shift and border fill; rotation, anisotropy and flips
  must stay at noise (detector boxes are upright squares);
- lighting: a plane fitted to a flat grey face's output over its input: gradient strength ``a``
  and direction; the mean level must stay (the field is centred);
- blur: a vertical edge; the derivative of its row-averaged profile is the kernel, whose spread
  is sigma; the edge must not move;
- noise: a flat grey face: std and mean of the change, and the correlation of neighbouring pixels
  (independent noise: at sampling noise);
- JPEG: a textured face (shading, stripes, a square): the RMS error, and the quality whose
  re-compression of the probe gives the nearest error (must stay within ``JPEG_QUALITY``).

Each passes with seeds 1, 2, 3 and 12. With the camera preset, a batched engine whose blur sigma
range is 0.5-1.4 (not 1.5), noise std 0.01-0.045 (not 0.05), JPEG quality 30-75 or 25-80 (not
30-80), lighting 0.1-0.37 (not 0.4), perspective scale or crop zoom 10% smaller, crop shift
0.045 (not 0.05), or any camera step's probability 0.8 times the preset's, fails.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy import stats

from emo.cli import compose
from emo.data.batch_augment import BatchAugment
from emo.data.transforms import (
    BLUR_SIGMA,
    CROP_SHIFT,
    CROP_ZOOM,
    JPEG_QUALITY,
    LIGHTING,
    NOISE_STD,
    AugmentFlags,
    build_augment,
    resolve_augment,
)
from emo.paths import CONF_DIR

N = 3000  # draws per engine and probe (~1500 applied affines, ~750 erasures)
SIDE = 48
CENTRE = (SIDE - 1) / 2  # the image centre in pixel-centre coordinates
GEOMETRY_FLAGS = ("hflip", "rotate", "scale", "shift", "affine_p")
SEED = 12
Z = 5  # standard errors allowed between the engines
KS_P = 1e-3

_yy, _xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
# Three non-collinear dots within 10 px of the centre: after the largest zoom (1.15), rotation and
# shift (4.8 px per axis) they stay > 4 sigma inside the frame, so no reflected copy mixes in.
_XY1 = np.stack([_xx.ravel(), _yy.ravel(), np.ones(SIDE * SIDE, np.float32)], 1)
_DOTS = ((-8.0, -5.0), (8.0, -3.0), (-2.0, 8.0))


def _geometry_probe() -> np.ndarray:
    dots = [np.exp(-((_xx - CENTRE - dx) ** 2 + (_yy - CENTRE - dy) ** 2) / (2 * 1.5**2)) for dx, dy in _DOTS]
    frame = np.zeros((SIDE, SIDE), np.float32)
    frame[[0, -1], :] = frame[:, [0, -1]] = 1
    return (np.stack([*dots, frame]) * 255).round().astype(np.uint8)  # (4, S, S)


def _ramp_probe() -> np.ndarray:
    return np.tile(np.linspace(48, 208, SIDE), (SIDE, 1)).round().astype(np.uint8)[None]


def _grey_probe() -> np.ndarray:
    return np.full((1, SIDE, SIDE), 128, np.uint8)


def _albumentations(flags: dict, probe: np.ndarray) -> np.ndarray:
    """``N`` draws of ``build_augment`` on a (C, S, S) uint8 probe -> (N, C, S, S) in 0..1."""
    pipe = build_augment(**flags)
    if pipe is None:
        out = np.repeat(probe[None], N, 0)
    else:
        pipe.set_random_seed(SEED)
        image = probe[0] if len(probe) == 1 else np.ascontiguousarray(probe.transpose(1, 2, 0))
        out = np.stack([pipe(image=image)["image"] for _ in range(N)])
        out = out[:, None] if out.ndim == 3 else out.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out, dtype=np.float32) / 255


def _batched(flags: dict, probe: np.ndarray) -> np.ndarray:
    """``N`` draws of ``BatchAugment`` (one batch) on the same probe, as the training step feeds it."""
    x = torch.from_numpy(probe).float().div(255).expand(N, -1, -1, -1).contiguous()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return BatchAugment(**flags)(x).numpy()


def _centroids(a: np.ndarray) -> np.ndarray:
    """(N, K, S, S) -> (N, K, 2) intensity centroids (x, y) relative to the image centre."""
    moments = a.reshape(*a.shape[:2], -1) @ _XY1  # (N, K, 3): sum of x, y and 1, intensity-weighted
    return moments[..., :2] / moments[..., 2:] - CENTRE


_FRAME_MASS = 4 * SIDE - 4  # pixels of the one-pixel frame, each 1.0
_PROBE_DOTS = _centroids(_geometry_probe()[None, :3].astype(np.float32))[0].astype(np.float64)


def _measure_geometry(out: np.ndarray) -> tuple[dict, dict]:
    q = _centroids(out[:, :3]).astype(np.float64)  # dot i lands at  M @ p_i + t
    x = np.linalg.solve(np.c_[_PROBE_DOTS, np.ones(3)][None], q)  # (N, 3, 2): [M^T; t]
    m, t = x[:, :2].transpose(0, 2, 1), x[:, 2]
    det = np.linalg.det(m)
    flip = det < 0
    m[flip, :, 0] *= -1  # undo the mirror (applied first in both engines): m = zoom * rotation
    angle = np.degrees(np.arctan2(m[:, 1, 0] - m[:, 0, 1], m[:, 0, 0] + m[:, 1, 1]))
    zoom = np.sqrt(np.abs(det))
    sv = np.linalg.svd(m, compute_uv=False)
    shift = t / SIDE
    frame = out[:, 3].sum((1, 2)) / _FRAME_MASS
    applied = (np.abs(angle) > 0.1) | (np.abs(zoom - 1) > 1e-3) | (np.abs(shift).max(1) > 1e-3)
    values = {
        "angle": angle,
        "zoom": zoom,
        "anisotropy": np.log(sv[:, 0] / sv[:, 1]),
        "shift_x": shift[:, 0],
        "shift_y": shift[:, 1],
        "border": frame,
    }
    return {"flip": flip, "affine": applied}, {k: v[applied] for k, v in values.items()}


def _measure_brightness_contrast(out: np.ndarray) -> tuple[dict, dict]:
    x = _ramp_probe()[0].ravel().astype(np.float64) / 255
    y = out[:, 0].reshape(len(out), -1).astype(np.float64)
    w = ((y > 2 / 255) & (y < 253 / 255)).astype(np.float64)  # clipped pixels say nothing
    s1, sx, sy, sxx, sxy = w.sum(1), w @ x, (w * y).sum(1), w @ (x * x), (w * y) @ x
    gain = (s1 * sxy - sx * sy) / (s1 * sxx - sx**2)
    offset = (sy - gain * sx) / s1
    brightness = gain * x.mean() + offset - x.mean()  # change of the mean grey level
    applied = (np.abs(gain - 1) > 4e-3) | (np.abs(brightness) > 4e-3)  # uint8 steps are 1/255
    return {"brightness_contrast": applied}, {"gain": gain[applied], "brightness": brightness[applied]}


def _measure_erasing(out: np.ndarray) -> tuple[dict, dict]:
    erased = out[:, 0] == 0
    area = erased.mean((1, 2))
    on = area > 0
    rows, cols = erased[on].any(2), erased[on].any(1)
    h, w = rows.sum(1), cols.sum(1)
    assert np.array_equal(h * w, erased[on].sum((1, 2))), "an erased region is not one rectangle"
    first_row, first_col = rows.argmax(1), cols.argmax(1)
    values = {
        "area": area[on],
        "log_aspect": np.log(h / w),
        "centre_y": (first_row + h / 2) / SIDE,
        "centre_x": (first_col + w / 2) / SIDE,
    }
    return {"erasing": on}, values


# Camera steps (issue 15). Outputs are rounded to whole grey levels before measuring, as
# albumentations' uint8 outputs are, so that rounding does not tell the engines apart.
def _levels(out: np.ndarray) -> np.ndarray:
    return np.round(out.astype(np.float64) * 255) / 255


_SQUARE = ((-9.0, -9.0), (9.0, -9.0), (9.0, 9.0), (-9.0, 9.0))  # one dot per channel
_EDGES = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * SIDE / 2  # frame corners


def _square_probe() -> np.ndarray:
    dots = [
        np.exp(-((_xx - CENTRE - dx) ** 2 + (_yy - CENTRE - dy) ** 2) / (2 * 1.5**2)) for dx, dy in _SQUARE
    ]
    return (np.stack(dots) * 255).round().astype(np.uint8)  # (4, S, S)


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(N, 4, 2) point pairs -> (N, 3, 3) homographies src -> dst (h33 = 1)."""
    n = len(src)
    u, v, x, y = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    one, zero = np.ones_like(u), np.zeros_like(u)
    a = np.concatenate(
        [
            np.stack([u, v, one, zero, zero, zero, -u * x, -v * x], -1),
            np.stack([zero, zero, zero, u, v, one, -u * y, -v * y], -1),
        ],
        1,
    )
    h = np.linalg.solve(a, np.concatenate([x, y], 1)[..., None])[..., 0]
    return np.concatenate([h, np.ones((n, 1))], 1).reshape(n, 3, 3)


_PROBE_SQUARE = _centroids(_square_probe()[None].astype(np.float32))[0].astype(np.float64)


def _measure_perspective(out: np.ndarray) -> tuple[dict, dict]:
    """The four dots give the homography; it says where each corner of the frame came from."""
    q = _centroids(out).astype(np.float64)  # (N, 4, 2), dot i lands at G(p_i)
    g = _homography(np.broadcast_to(_PROBE_SQUARE, q.shape).copy(), q)  # input -> output
    corners = np.c_[_EDGES, np.ones(4)] @ np.linalg.inv(g).transpose(0, 2, 1)  # (N, 4, 3)
    move = (corners[..., :2] / corners[..., 2:] - _EDGES) / SIDE  # (N, 4, 2), of the side
    applied = np.abs(move).max((1, 2)) > 1e-3
    values = {f"corner{i}_{axis}": move[applied, i, j] for i in range(4) for j, axis in enumerate("xy")}
    return {"perspective": applied}, values


def _measure_crop_jitter(out: np.ndarray) -> tuple[dict, dict]:
    rates, values = _measure_geometry(out)
    return {"crop_jitter": rates["affine"], "flip": rates["flip"]}, values


def _measure_lighting(out: np.ndarray) -> tuple[dict, dict]:
    """A plane fitted to the flat probe's output over its own grey: 1 + a (x cos t + y sin t)."""
    field = _levels(out[:, 0]).reshape(len(out), -1) / (128 / 255)
    xs = (2 * np.arange(SIDE) + 1) / SIDE - 1  # half sides, at pixel centres
    design = np.stack([np.ones(SIDE * SIDE), np.tile(xs, SIDE), np.repeat(xs, SIDE)], 1)
    c, *_ = np.linalg.lstsq(design, field.T, rcond=None)  # (3, N)
    a = np.hypot(c[1], c[2])
    applied = a > 0.02
    values = {"gain": a[applied], "angle": np.arctan2(c[2], c[1])[applied], "level": c[0][applied] - 1}
    return {"lighting": applied}, values


def _edge_probe() -> np.ndarray:
    probe = np.full((1, SIDE, SIDE), 51, np.uint8)
    probe[..., SIDE // 2 :] = 204
    return probe


def _measure_blur(out: np.ndarray) -> tuple[dict, dict]:
    """Sigma from the vertical edge: the spread of the derivative of its (row-averaged) profile,
    which is the blur kernel; and the change at the top and bottom rows (the border handling)."""
    y = _levels(out[:, 0])
    probe = _edge_probe()[0] / 255
    applied = np.abs(y - probe).max((1, 2)) > 1e-6
    lsf = np.diff(y.mean(1), axis=1)  # (N, S - 1)
    x = np.arange(SIDE - 1, dtype=np.float64)
    mass = lsf.sum(1)
    mean = lsf @ x / mass
    sigma = np.sqrt(np.maximum((lsf * (x[None] - mean[:, None]) ** 2).sum(1) / mass, 0))
    values = {"sigma": sigma[applied], "edge_position": mean[applied] - (SIDE / 2 - 1)}
    return {"blur": applied}, values


def _measure_noise(out: np.ndarray) -> tuple[dict, dict]:
    d = _levels(out[:, 0]) - 128 / 255
    std = d.std((1, 2))
    applied = std > 0
    dc = d - d.mean((1, 2), keepdims=True)
    neighbour = (dc[:, :, 1:] * dc[:, :, :-1]).mean((1, 2)) / np.maximum(std**2, 1e-12)
    values = {"std": std[applied], "mean": d.mean((1, 2))[applied], "neighbour_corr": neighbour[applied]}
    return {"noise": applied}, values


def _texture_probe() -> np.ndarray:
    """Smooth shading, fine stripes and a sharp square: what JPEG rounds away at any quality."""
    t = 128 + 50 * np.sin(_xx / 2.3) * np.cos(_yy / 3.7) + 30 * np.sin((_xx + _yy) / 1.3)
    t[14:30, 18:34] += 40
    return np.clip(t, 0, 255).round().astype(np.uint8)[None]


def _jpeg_error(quality: int) -> float:
    import cv2

    probe = _texture_probe()[0]
    _, code = cv2.imencode(".jpg", probe, (cv2.IMWRITE_JPEG_QUALITY, quality))
    return float(np.sqrt(np.mean((cv2.imdecode(code, cv2.IMREAD_GRAYSCALE) / 255 - probe / 255) ** 2)))


def _measure_jpeg(out: np.ndarray) -> tuple[dict, dict]:
    """The error energy (RMS, 0..1 scale) on a textured probe, and the quality it points to: the
    one of 1..100 whose re-compression of the probe gives the nearest error."""
    rms = np.sqrt(((_levels(out[:, 0]) - _texture_probe()[0] / 255) ** 2).mean((1, 2)))
    applied = rms > 0
    table = np.array([_jpeg_error(q) for q in range(1, 101)])
    quality = 1 + np.abs(rms[applied, None] - table[None]).argmin(1)
    return {"jpeg": applied}, {"rms": rms[applied], "quality": quality.astype(np.float64)}


GROUPS = {  # group -> (flags it reads, probe, measure)
    "geometry": (GEOMETRY_FLAGS, _geometry_probe, _measure_geometry),
    "brightness_contrast": (("brightness_contrast",), _ramp_probe, _measure_brightness_contrast),
    "erasing": (("erasing",), _grey_probe, _measure_erasing),
    "perspective": (("perspective", "perspective_scale"), _square_probe, _measure_perspective),
    "crop_jitter": (("crop_jitter",), _geometry_probe, _measure_crop_jitter),
    "lighting": (("lighting",), _grey_probe, _measure_lighting),
    "blur": (("blur",), _edge_probe, _measure_blur),
    "noise": (("noise",), _grey_probe, _measure_noise),
    "jpeg": (("jpeg",), _texture_probe, _measure_jpeg),
}


@functools.cache
def _measure(group: str, engine: str, flags: tuple) -> tuple[dict, dict]:
    _, probe, measure = GROUPS[group]
    draw = _albumentations if engine == "albumentations" else _batched
    return measure(draw(dict(flags), probe()))


def augment_presets() -> list[str]:
    """The options of Hydra's augment group."""
    return sorted(p.stem for p in (CONF_DIR / "augment").glob("*.yaml"))


@functools.cache
def preset_flags(preset: str) -> dict:
    """A preset's flags, composed by Hydra's augment group as a run would get them."""
    return resolve_augment(compose([f"augment={preset}"]).data.augment)


def _group_flags(preset: str, group: str) -> tuple:
    """The preset's flags that one group of steps reads (the others off), hashable for the cache."""
    flags = preset_flags(preset)
    return tuple(sorted((k, v) for k, v in flags.items() if k in GROUPS[group][0]))


def _rate_problems(name: str, a: np.ndarray, b: np.ndarray, flag: float) -> list[str]:
    pa, pb = a.mean(), b.mean()
    p = (pa + pb) / 2
    tol_diff = Z * np.sqrt(p * (1 - p) * (1 / len(a) + 1 / len(b)))
    tol_flag = Z * np.sqrt(flag * (1 - flag) / N)
    out = []
    if abs(pa - pb) > tol_diff:
        out.append(f"{name} rate: albumentations {pa:.3f}, batched {pb:.3f} (tolerance {tol_diff:.3f})")
    for engine, pe in (("albumentations", pa), ("batched", pb)):
        if abs(pe - flag) > tol_flag:
            out.append(f"{name} rate: {engine} {pe:.3f}, preset says {flag} (tolerance {tol_flag:.3f})")
    return out


def _summary(v: np.ndarray) -> str:
    q01, q50, q99 = np.quantile(v, [0.01, 0.5, 0.99])
    return (
        f"n={len(v)} mean {v.mean():+.4f} std {v.std():.4f} q01 {q01:+.4f} median {q50:+.4f} q99 {q99:+.4f}"
    )


def _quantile_se(v: np.ndarray, p: float, h: float = 0.005) -> float:
    """Asymptotic standard error of the p-quantile, sqrt(p(1-p)/n) / density, the density read
    from the spacing of the neighbouring quantiles."""
    lo, hi = np.quantile(v, [p - h, p + h])
    return float(np.sqrt(p * (1 - p) / len(v)) * (hi - lo) / (2 * h))


def _value_problems(name: str, a: np.ndarray, b: np.ndarray, span: float) -> list[str]:
    """Compare two samples of one parameter; ``span`` (its configured range) sets a noise floor."""
    assert len(a) > 100 and len(b) > 100, f"{name}: too few applied draws ({len(a)}, {len(b)})"
    problems = []
    ks = stats.ks_2samp(a, b)
    if ks.pvalue < KS_P:
        problems.append(f"KS p={ks.pvalue:.1e}")
    tol = Z * np.sqrt(a.var() / len(a) + b.var() / len(b))
    if abs(a.mean() - b.mean()) > tol:
        problems.append(f"means differ by {abs(a.mean() - b.mean()):.4f} > {tol:.4f}")
    for p in (0.01, 0.99):  # the range: KS hardly sees the tails
        d = abs(np.quantile(a, p) - np.quantile(b, p))
        tol = max(Z * np.hypot(_quantile_se(a, p), _quantile_se(b, p)), 0.005 * span)
        if d > tol:
            problems.append(f"{p:.0%} percentiles differ by {d:.4f} > {tol:.4f}")

    def rel_se(v):  # standard error of the sample standard deviation, relative
        return np.sqrt((stats.kurtosis(v, fisher=False) - 1) / (4 * len(v)))

    tol = Z * np.hypot(rel_se(a), rel_se(b))
    if abs(a.std() / b.std() - 1) > tol:
        problems.append(f"spreads differ by {abs(a.std() / b.std() - 1):.1%} > {tol:.1%}")
    if not problems:
        return []
    return [
        f"{name}: {'; '.join(problems)}\n    albumentations {_summary(a)}\n    batched        {_summary(b)}"
    ]


def _noise_problems(name: str, a: np.ndarray, b: np.ndarray, limit: float) -> list[str]:
    out = []
    for engine, v in (("albumentations", a), ("batched", b)):
        if len(v) and np.quantile(np.abs(v), 0.99) > limit:
            out.append(f"{name} should stay at noise (< {limit}): {engine} {_summary(v)}")
    return out


def _compare(preset: str, group: str) -> tuple[tuple[dict, dict], tuple[dict, dict], list[str]]:
    """Both engines' measurements for one group of a preset, and an empty list of problems."""
    flags = _group_flags(preset, group)
    return _measure(group, "albumentations", flags), _measure(group, "batched", flags), []


@pytest.mark.parametrize("preset", augment_presets())
def test_geometry_agrees(preset):
    f = AugmentFlags(**dict(_group_flags(preset, "geometry")))
    (ra, va), (rb, vb), problems = _compare(preset, "geometry")
    affine_on = f.affine_p if (f.rotate or f.scale or f.shift) else 0.0
    problems += _rate_problems("flip", ra["flip"], rb["flip"], f.hflip)
    problems += _rate_problems("affine", ra["affine"], rb["affine"], affine_on)
    if affine_on:
        problems += _value_problems("rotation (degrees)", va["angle"], vb["angle"], 2 * f.rotate)
        problems += _value_problems("zoom", va["zoom"], vb["zoom"], 2 * f.scale)
        problems += _value_problems("border fill (frame brightness)", va["border"], vb["border"], 2.0)
        # No preset asks for different x and y zoom: 1% is ~20x the interpolation noise.
        problems += _noise_problems("anisotropy log(s1/s2)", va["anisotropy"], vb["anisotropy"], 0.01)
        for axis in ("shift_x", "shift_y"):
            if f.shift:
                problems += _value_problems(f"{axis} (of the side)", va[axis], vb[axis], 2 * f.shift)
            else:  # 0.1 px
                problems += _noise_problems(axis, va[axis], vb[axis], 0.1 / SIDE)
    assert not problems, f"{preset}: the engines disagree on geometry:\n" + "\n".join(problems)


@pytest.mark.parametrize("preset", augment_presets())
def test_brightness_contrast_agrees(preset):
    lim = AugmentFlags(**dict(_group_flags(preset, "brightness_contrast"))).brightness_contrast
    (ra, va), (rb, vb), problems = _compare(preset, "brightness_contrast")
    problems += _rate_problems(
        "brightness/contrast", ra["brightness_contrast"], rb["brightness_contrast"], 0.5 if lim else 0
    )
    if lim:
        problems += _value_problems("contrast gain", va["gain"], vb["gain"], 2 * lim)
        problems += _value_problems("brightness (0..1)", va["brightness"], vb["brightness"], 2 * lim)
    assert not problems, f"{preset}: the engines disagree on brightness/contrast:\n" + "\n".join(problems)


@pytest.mark.parametrize("preset", augment_presets())
def test_erasing_agrees(preset):
    p = AugmentFlags(**dict(_group_flags(preset, "erasing"))).erasing
    (ra, va), (rb, vb), problems = _compare(preset, "erasing")
    problems += _rate_problems("erasing", ra["erasing"], rb["erasing"], p)
    if p:
        problems += _value_problems("erased fraction", va["area"], vb["area"], 0.2 - 0.02)
        problems += _value_problems(
            "log(h/w) of the box", va["log_aspect"], vb["log_aspect"], np.log(3.3 / 0.3)
        )
        for axis in ("centre_x", "centre_y"):
            problems += _value_problems(f"box {axis} (of the side)", va[axis], vb[axis], 1.0)
    assert not problems, f"{preset}: the engines disagree on erasing:\n" + "\n".join(problems)


def _step(preset: str, group: str) -> AugmentFlags:
    return AugmentFlags(**dict(_group_flags(preset, group)))


@pytest.mark.parametrize("preset", augment_presets())
def test_perspective_agrees(preset):
    f = _step(preset, "perspective")
    (ra, va), (rb, vb), problems = _compare(preset, "perspective")
    problems += _rate_problems("perspective", ra["perspective"], rb["perspective"], f.perspective)
    if f.perspective:
        for name in va:  # each corner's move, x and y: uniform in +-scale of the side
            problems += _value_problems(f"{name} (of the side)", va[name], vb[name], 2 * f.perspective_scale)
    assert not problems, f"{preset}: the engines disagree on perspective:\n" + "\n".join(problems)


@pytest.mark.parametrize("preset", augment_presets())
def test_crop_jitter_agrees(preset):
    p = _step(preset, "crop_jitter").crop_jitter
    (ra, va), (rb, vb), problems = _compare(preset, "crop_jitter")
    problems += _rate_problems("crop jitter", ra["crop_jitter"], rb["crop_jitter"], p)
    problems += _rate_problems("flip", ra["flip"], rb["flip"], 0.0)
    if p:
        problems += _value_problems("zoom", va["zoom"], vb["zoom"], 2 * CROP_ZOOM)
        for axis in ("shift_x", "shift_y"):
            problems += _value_problems(f"{axis} (of the side)", va[axis], vb[axis], 2 * CROP_SHIFT)
        problems += _value_problems("border fill (frame brightness)", va["border"], vb["border"], 2.0)
        # Boxes are upright: 0.3 degrees is ~2x the measurement noise here (std 0.06 in both engines).
        problems += _noise_problems("rotation (degrees)", va["angle"], vb["angle"], 0.3)
        problems += _noise_problems("anisotropy log(s1/s2)", va["anisotropy"], vb["anisotropy"], 0.01)
    assert not problems, f"{preset}: the engines disagree on crop jitter:\n" + "\n".join(problems)


@pytest.mark.parametrize("preset", augment_presets())
def test_lighting_agrees(preset):
    p = _step(preset, "lighting").lighting
    (ra, va), (rb, vb), problems = _compare(preset, "lighting")
    problems += _rate_problems("lighting", ra["lighting"], rb["lighting"], p)
    if p:
        problems += _value_problems("gradient a", va["gain"], vb["gain"], LIGHTING[1] - LIGHTING[0])
        problems += _value_problems("gradient direction (radians)", va["angle"], vb["angle"], 2 * np.pi)
        # The field is centred: the mean grey level stays (to rounding).
        problems += _noise_problems("mean level change", va["level"], vb["level"], 0.005)
    assert not problems, f"{preset}: the engines disagree on lighting:\n" + "\n".join(problems)


@pytest.mark.parametrize("preset", augment_presets())
def test_blur_agrees(preset):
    p = _step(preset, "blur").blur
    (ra, va), (rb, vb), problems = _compare(preset, "blur")
    problems += _rate_problems("blur", ra["blur"], rb["blur"], p)
    if p:
        problems += _value_problems("sigma (px)", va["sigma"], vb["sigma"], BLUR_SIGMA[1] - BLUR_SIGMA[0])
        problems += _noise_problems("edge position (px)", va["edge_position"], vb["edge_position"], 0.02)
    assert not problems, f"{preset}: the engines disagree on blur:\n" + "\n".join(problems)


@pytest.mark.parametrize("preset", augment_presets())
def test_noise_agrees(preset):
    p = _step(preset, "noise").noise
    (ra, va), (rb, vb), problems = _compare(preset, "noise")
    problems += _rate_problems("noise", ra["noise"], rb["noise"], p)
    if p:
        problems += _value_problems("noise std (0..1)", va["std"], vb["std"], NOISE_STD[1] - NOISE_STD[0])
        problems += _value_problems("noise mean (0..1)", va["mean"], vb["mean"], 0.01)
        # Independent per pixel: neighbours' correlation is sampling noise (1/48 = 0.02 per image).
        problems += _noise_problems("neighbour correlation", va["neighbour_corr"], vb["neighbour_corr"], 0.1)
    assert not problems, f"{preset}: the engines disagree on noise:\n" + "\n".join(problems)


@pytest.mark.parametrize("preset", augment_presets())
def test_jpeg_agrees(preset):
    p = _step(preset, "jpeg").jpeg
    (ra, va), (rb, vb), problems = _compare(preset, "jpeg")
    problems += _rate_problems("jpeg", ra["jpeg"], rb["jpeg"], p)
    if p:
        problems += _value_problems("error RMS (0..1)", va["rms"], vb["rms"], 0.01)
        problems += _value_problems(
            "quality", va["quality"], vb["quality"], JPEG_QUALITY[1] - JPEG_QUALITY[0]
        )
        for engine, q in (("albumentations", va["quality"]), ("batched", vb["quality"])):
            if q.min() < JPEG_QUALITY[0] - 2 or q.max() > JPEG_QUALITY[1] + 2:
                problems.append(f"{engine} quality outside {JPEG_QUALITY}: {_summary(q)}")
    assert not problems, f"{preset}: the engines disagree on JPEG:\n" + "\n".join(problems)
