"""PNG quicklooks drawn with Pillow: a stretched image, and line plots (no matplotlib).

PNGs carry their product name, parents and processor in text chunks and no
time stamp, so the same data always give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size``; older Pillow (< 10.1, e.g. Debian's) has only the bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: object, anchor: str) -> None:
    """Black text placed by a two-letter anchor (l/m/r, a/m/d), for fonts with or without anchor support."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left, bottom - top
    x = xy[0] - {"l": 0, "m": w / 2, "r": w}[anchor[0]]
    y = xy[1] - {"a": 0, "m": h / 2, "d": h}[anchor[1]]
    draw.text((x - left, y - top), text, fill=(0, 0, 0), font=font)


def _png_info(metadata: Mapping[str, str]) -> PngInfo:
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    return info


def stretch(data: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.8, gamma: float = 0.6) -> np.ndarray:
    """Percentile stretch with a gamma curve, to 8 bits."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [low_pct, high_pct])
    scaled = np.clip((np.nan_to_num(data, nan=lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0) ** gamma
    return np.rint(scaled * 255).astype(np.uint8)


def image_png(path: Path, data: np.ndarray, metadata: Mapping[str, str], label: str = "") -> None:
    """A grayscale quicklook of a 2-D image (row 0 at the top) with an optional caption strip."""
    img = Image.fromarray(stretch(np.asarray(data, dtype=np.float64)), mode="L")
    if label:
        font = _font(11)
        canvas = Image.new("L", (img.width, img.height + 16), 0)
        canvas.paste(img, (0, 0))
        ImageDraw.Draw(canvas).text((3, img.height + 2), label, fill=255, font=font)
        img = canvas
    img.save(path, format="PNG", pnginfo=_png_info(metadata), optimize=False)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]``."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e6 else f"{value:.2e}"


@dataclass(frozen=True)
class Panel:
    """One plot panel: a curve (NaNs break it) with axis labels."""

    x: np.ndarray
    y: np.ndarray
    xlabel: str
    ylabel: str
    color: tuple[int, int, int] = (31, 119, 180)


def plot_png(path: Path, title: str, panels: Sequence[Panel], metadata: Mapping[str, str],
             size: tuple[int, int] = (800, 560)) -> None:
    """Stacked line plots with axes, ticks and labels."""
    width, height = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(12)
    _text(draw, (width // 2, 8), title, font, "ma")
    top, bottom_pad, left, right = 30, 40, 80, 20
    label_gap = 18  # room for the y-axis label above each panel
    panel_h = (height - top) / len(panels)
    for k, panel in enumerate(panels):
        y0 = top + k * panel_h + label_gap
        y1 = top + (k + 1) * panel_h - bottom_pad
        x0, x1 = left, width - right
        ok = np.isfinite(panel.x) & np.isfinite(panel.y)
        xs, ys = panel.x[ok], panel.y[ok]
        xlo, xhi = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
        ylo, yhi = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
        pad = (yhi - ylo) * 0.05 or 1.0
        ylo, yhi = ylo - pad, yhi + pad

        def px(x: float, xlo: float = xlo, xhi: float = xhi, x0: float = x0, x1: float = x1) -> float:
            return x0 + (x - xlo) / ((xhi - xlo) or 1.0) * (x1 - x0)

        def py(y: float, ylo: float = ylo, yhi: float = yhi, y0: float = y0, y1: float = y1) -> float:
            return y1 - (y - ylo) / ((yhi - ylo) or 1.0) * (y1 - y0)

        draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0))
        for t in nice_ticks(xlo, xhi):
            draw.line((px(t), y1, px(t), y1 + 4), fill=(0, 0, 0))
            _text(draw, (px(t), y1 + 6), _fmt(t), font, "ma")
        for t in nice_ticks(ylo, yhi):
            draw.line((x0 - 4, py(t), x0, py(t)), fill=(0, 0, 0))
            draw.line((x0 + 1, py(t), x1 - 1, py(t)), fill=(230, 230, 230))
            _text(draw, (x0 - 6, py(t)), _fmt(t), font, "rm")
        _text(draw, ((x0 + x1) / 2, y1 + 22), panel.xlabel, font, "ma")
        _text(draw, (x0, y0 - 4), panel.ylabel, font, "ld")
        # one polyline per finite run
        finite = np.isfinite(panel.x) & np.isfinite(panel.y)
        run: list[tuple[float, float]] = []
        for x, y, good in zip(panel.x, panel.y, finite, strict=True):
            if good:
                run.append((px(float(x)), py(float(y))))
                continue
            if len(run) > 1:
                draw.line(run, fill=panel.color, width=2)
            run = []
        if len(run) > 1:
            draw.line(run, fill=panel.color, width=2)
    img.save(path, format="PNG", pnginfo=_png_info(metadata), optimize=False)
