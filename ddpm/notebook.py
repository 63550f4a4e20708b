"""What the book's chapters share for display: typeset SymPy results in the book's symbols, the
figure style, and image montages. Imported by the chapter notebooks (``from ddpm.notebook import
show``); the rest of the package never imports it, so IPython is needed only where it is used.
"""

from __future__ import annotations

import torch

# The code's symbol names -> the book's LaTeX. One table for every chapter: a SymPy symbol named
# ``abar_p`` prints as \bar\alpha_{t-1} wherever it appears.
LATEX_NAMES = {
    "abar": r"\bar\alpha",
    "abar_t": r"\bar\alpha_t",
    "abar_s": r"\bar\alpha_s",
    "abar_p": r"\bar\alpha_{t-1}",
    "abar_prev": r"\bar\alpha_{t-1}",
    "abar_{t-1}": r"\bar\alpha_{t-1}",
    "alpha": r"\alpha_t",
    "tildebeta": r"\tilde\beta_t",
    "sigma2": r"\sigma_t^2",
    "s2": "s^2",
    "r2": r"\|\mu_1 - \mu_2\|^2",
    "logdet_1": r"\ln\det\Sigma_1",
    "logdet_2": r"\ln\det\Sigma_2",
    "epsilon_hat": r"\hat\epsilon",
    "epsilon_theta": r"\epsilon_\theta",
    "x_p": r"x_{t-1}",
    "x0": "x_0",
    "xhat_0": r"\hat x_0",
}


def tex(expr, names: dict[str, str] | None = None) -> str:
    """LaTeX of a SymPy expression, its symbols written as the book writes them.

    ``names`` adds to (or overrides) :data:`LATEX_NAMES` for one call."""
    import sympy as sp

    table = {**LATEX_NAMES, **(names or {})}
    free = getattr(expr, "free_symbols", set())
    return sp.latex(expr, symbol_names={s: table[s.name] for s in free if getattr(s, "name", None) in table})


def show(lhs: str, expr, *more, per_line: int | None = None, names: dict[str, str] | None = None) -> None:
    """Typeset ``lhs = expr`` in the notebook (and on the website).

    ``more``: further ``(lhs, expr)`` lines, aligned on "=". ``per_line``: a long sum of the first
    line is broken into rows of that many terms. ``names``: symbol names for this call only."""
    import sympy as sp
    from IPython.display import Math, display

    lines = [(lhs, expr, per_line)] + [(l, e, None) for l, e in more]
    if len(lines) == 1 and not (per_line and isinstance(expr, sp.Add)):
        display(Math(f"{lhs} = {tex(expr, names)}"))
        return
    rows = []
    for l, e, n in lines:
        if not (n and isinstance(e, sp.Add)):
            rows.append(f"{l} &= {tex(e, names)}")
            continue
        terms = [tex(term, names) for term in e.as_ordered_terms()]  # the order sp.latex prints them in
        terms = [terms[0]] + [term if term.startswith("-") else "+ " + term for term in terms[1:]]
        chunks = [" ".join(terms[i : i + n]) for i in range(0, len(terms), n)]
        rows += [f"{l} &= {chunks[0]}"] + [rf"&\quad {c}" for c in chunks[1:]]
    display(Math(r"\begin{aligned}" + r" \\ ".join(rows) + r"\end{aligned}"))


def setup_figures(*, svg: bool = False, salt: str | None = None, font_size: float = 10) -> None:
    """The book's figure style: one font size for every chapter; ``svg=True`` for line plots (sharp
    and light; ``salt`` makes the SVG ids stable from run to run, so the stored outputs do not churn)."""
    import matplotlib.pyplot as plt

    params = {"figure.dpi": 100, "font.size": font_size, "axes.titlesize": font_size + 1, "legend.fontsize": font_size - 1}
    if svg:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("svg", metadata={"Date": None})
        if salt:
            params["svg.hashsalt"] = salt
    plt.rcParams.update(params)


def montage(images: torch.Tensor, ncol: int) -> torch.Tensor:
    """(N, 1, H, W) images in [-1, 1] -> one framed (rows*(H+2), ncol*(W+2)) array for ``imshow``."""
    tiles = torch.nn.functional.pad(images[:, 0].clamp(-1, 1), (1, 1, 1, 1), value=-1.0)  # (N, H+2, W+2)
    n, h, w = tiles.shape
    rows = n // ncol
    return tiles[: rows * ncol].reshape(rows, ncol, h, w).permute(0, 2, 1, 3).reshape(rows * h, ncol * w)
