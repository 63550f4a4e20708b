"""Figures of samples: a scatter plot for 2-D points, an image grid for images; and the raw
sample arrays beside them. Both are written atomically (:mod:`ddpm._io`) and refuse NaN or inf."""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write, atomic_write_bytes

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def check_finite(x: torch.Tensor, what: str = "samples") -> None:
    """``FloatingPointError`` if ``x`` holds NaN or inf (a diverged model or sampler writes no figure)."""
    bad = (~torch.isfinite(x)).sum().item()
    if bad:
        raise FloatingPointError(f"{bad} of {x.numel()} values of the {what} are NaN or inf; nothing was written")


def figure(x: torch.Tensor, title: str = ""):
    """A matplotlib figure: a scatter plot of (N, 2) points in [-1.6, 1.6]^2, or a grid of up to 100
    images (N, C, H, W) in [-1, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x.dim() == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        pts = x[:, :2].numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.6)
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
        ax.set_aspect("equal")
    else:
        k = min(x.shape[0], 100)
        cols = math.ceil(math.sqrt(k))
        rows = math.ceil(k / cols)
        C, H, W = x.shape[1:]
        grid = torch.ones(C, rows * (H + 1) + 1, cols * (W + 1) + 1)
        img = (x[:k].clamp(-1, 1) + 1) / 2
        for i in range(k):
            r, c = divmod(i, cols)
            grid[:, 1 + r * (H + 1) : 1 + r * (H + 1) + H, 1 + c * (W + 1) : 1 + c * (W + 1) + W] = img[i]
        fig, ax = plt.subplots(figsize=(min(1 + cols * 0.6, 12), min(1 + rows * 0.6, 12)))
        arr = grid.permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if C == 1 else arr, cmap="gray" if C == 1 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(x: torch.Tensor, path, title: str = "") -> Path:
    """Save :func:`figure` of ``x`` to ``path`` (its suffix picks the format) atomically."""
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"a figure must be a {', '.join(FIGURE_SUFFIXES)} file, got {path}")
    x = x.detach().float().cpu()
    check_finite(x)
    fig = figure(x, title)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, dpi=120, format=path.suffix.lower().lstrip(".").replace("jpg", "jpeg"))
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def save_array(x: torch.Tensor, path) -> Path:
    """Save ``x`` as a ``.npy`` file atomically."""
    arr = x.detach().cpu().numpy()
    check_finite(x)
    return atomic_write(path, lambda f: np.save(f, arr))


_ICONS = {"fa-minus": "&#x2212;", "fa-fast-backward": "&#x23EE;", "fa-step-backward": "&#x25C0;|",
          "fa-play fa-flip-horizontal": "&#x25C0;", "fa-pause": "&#x2016;", "fa-play": "&#x25B6;",
          "fa-step-forward": "|&#x25B6;", "fa-fast-forward": "&#x23ED;", "fa-plus": "+"}


def offline_animation_html(html: str, alt: str, colours: int = 16) -> str:
    """matplotlib's ``Animation.to_jshtml()`` made fit for an offline book page: its one network request
    (a font-awesome style sheet from a CDN) removed and the player's buttons given text symbols, the
    frames reduced to ``colours`` colours (a fraction of the weight), the frame image given ``alt``
    text, and the image and slider shrinking with the column. Raises ``ValueError`` if a link to the
    network remains."""
    from PIL import Image

    if not alt or len(alt) < 15:
        raise ValueError("alt must describe the animation in words (15 characters at least)")

    def shrink(m):
        raw = base64.b64decode(m.group(2).replace("\\\n", "").replace("\n", ""))
        img = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=colours)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return m.group(1) + base64.b64encode(buf.getvalue()).decode() + m.group(3)

    html = re.sub(r'(frames\[\d+\] = "data:image/png;base64,)([^"]*)(")', shrink, html)
    html = re.sub(r'<link rel="stylesheet"\s+href="https://[^"]*font-awesome[^"]*">', "", html)
    html = re.sub(r'<i class="fa ([^"]*)"></i>', lambda m: _ICONS.get(m.group(1), "?"), html)
    html = re.sub(r"width: (\d+)px;", r"width: \1px; max-width: 100%;", html, count=1)
    alt = alt.replace('"', "&quot;")
    html = html.replace("<img ", f'<img style="max-width: 100%; height: auto" alt="{alt}" ', 1)
    if "https://" in html or "http://" in html or "fa fa-" in html:
        raise ValueError("the animation still links to the network")
    return html
