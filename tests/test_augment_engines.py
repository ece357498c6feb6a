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
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy import stats

from emo.data.batch_augment import BatchAugment
from emo.data.transforms import AugmentFlags, augment_presets, build_augment, resolve_augment

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


GROUPS = {  # group -> (flags it reads, probe, measure)
    "geometry": (GEOMETRY_FLAGS, _geometry_probe, _measure_geometry),
    "brightness_contrast": (("brightness_contrast",), _ramp_probe, _measure_brightness_contrast),
    "erasing": (("erasing",), _grey_probe, _measure_erasing),
}


@functools.cache
def _measure(group: str, engine: str, flags: tuple) -> tuple[dict, dict]:
    _, probe, measure = GROUPS[group]
    draw = _albumentations if engine == "albumentations" else _batched
    return measure(draw(dict(flags), probe()))


def _group_flags(preset: str, group: str) -> tuple:
    """The preset's flags that one group of steps reads (the others off), hashable for the cache."""
    flags = resolve_augment(preset)
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
