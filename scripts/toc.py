"""The book's table of contents, read once for everyone: the tests, the coursework builder and the
benchmarks ask this module which pages and chapters the book has, instead of walking ``_toc.yml``
themselves."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files(root: Path = ROOT) -> list[str]:
    """Every page of ``_toc.yml`` (the root page first), as written there: ``book/ch3_forward_process``."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(toc.get("parts", []))
    return files


def source(page: str, root: Path = ROOT) -> Path | None:
    """The source file of a page (``.ipynb`` or ``.md``), or None if neither exists."""
    for ext in (".ipynb", ".md"):
        if (root / f"{page}{ext}").exists():
            return root / f"{page}{ext}"
    return None


def notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks of the table of contents, in order."""
    return [p for p in (source(f, root) for f in toc_files(root)) if p is not None and p.suffix == ".ipynb"]


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapter notebooks (``book/chN_*.ipynb``) of the table of contents, in order."""
    return [p for p in notebooks(root) if p.name.startswith("ch")]
