"""The data that crosses the sandbox's boundary, as JSON: numbers, strings, lists, tensors, arrays, SymPy
expressions (as ``srepr`` text), noise schedules and torch generators.

Both sides use this file: the kernel inside the sandbox encodes the student's answers with it, the grader
decodes them with :func:`decode`, which builds only plain data (it never unpickles, imports or evaluates
anything the student sent; a SymPy expression is rebuilt by :func:`parse_sympy`, which accepts only calls
of SymPy's own classes on literal arguments). Objects that cannot be sent as data travel by reference:
the kernel's functions as ``{"callable": name}`` (the grader calls them through the kernel), the grader's
functions as ``{"cb": k}`` (the kernel calls back).
"""

from __future__ import annotations

import ast
import base64
import math
import re

MAX_ELEMENTS = 4_000_000  # per tensor or array
MAX_DEPTH = 32
MAX_SYMPY_CHARS = 200_000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_{}^~']{0,60}")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?(e[-+]?[0-9]+)?")
_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


class WireError(ValueError):
    """Data from the other side that is not of the shapes this module sends."""


def encode(x, callables=None, depth: int = 0):
    """``x`` as JSON-ready data. ``callables(obj) -> dict | None`` encodes what is not data."""
    if depth > MAX_DEPTH:
        raise WireError("nested too deeply")
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return x if abs(x) < 2**63 else {"bigint": str(x)}
    if isinstance(x, float):
        return x if math.isfinite(x) else {"float": repr(x)}
    if isinstance(x, (list, tuple)):
        return {"list" if isinstance(x, list) else "tuple": [encode(v, callables, depth + 1) for v in x]}
    if isinstance(x, dict):
        return {"dict": [[encode(k, callables, depth + 1), encode(v, callables, depth + 1)] for k, v in x.items()]}
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        import torch

        if isinstance(x, torch.Tensor):
            t = x.detach().cpu()
            if t.is_complex():
                raise WireError("complex tensors are not supported")
            raw = (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy()
            return {"tensor": {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "bytes": _bytes(raw)}}
        if isinstance(x, torch.Generator):
            return {"generator": x.get_state().tolist()}
    if mod == "numpy":
        import numpy as np

        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "biuf":
                raise WireError(f"arrays of dtype {x.dtype} are not supported")
            return {"ndarray": {"dtype": str(x.dtype), "shape": list(x.shape), "bytes": _bytes(x)}}
        if isinstance(x, np.generic):
            return encode(x.item(), callables, depth)
    if mod == "sympy":
        import sympy as sp

        if isinstance(x, sp.Basic):
            return {"sympy": sp.srepr(x)}
    if mod == "ddpm" and type(x).__name__ == "Schedule":
        return {"schedule": encode(x.betas, callables, depth + 1)}
    if callables is not None:
        ref = callables(x)
        if ref is not None:
            return ref
    return {"opaque": type(x).__name__}


def _float(d):
    v = d.get("float")
    if v not in ("nan", "inf", "-inf"):
        raise WireError("a bad special float")
    return float(v)


def _bytes(a) -> str:
    """An array's values as base64 of their little-endian bytes: exact (NaN and inf included) and fast,
    read back by :func:`_array` with ``numpy.frombuffer`` (plain numbers only, never pickle)."""
    import numpy as np

    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).decode("ascii")


def _array(spec, kind):
    import numpy as np

    if not isinstance(spec, dict) or spec.get("dtype") not in _DTYPES:
        raise WireError(f"a {kind} of unsupported dtype")
    shape, data = spec.get("shape"), spec.get("bytes")
    if not isinstance(shape, list) or not all(isinstance(n, int) and 0 <= n for n in shape) or len(shape) > 16:
        raise WireError(f"a {kind} with a bad shape")
    numel = math.prod(shape)
    # bfloat16 travels as float32 (numpy has no bfloat16)
    np_dtype = np.dtype("float32" if spec["dtype"] == "bfloat16" else spec["dtype"]).newbyteorder("<")
    if numel > MAX_ELEMENTS or not isinstance(data, str) or len(data) > 4 * (numel * np_dtype.itemsize + 3) // 3 + 4:
        raise WireError(f"a {kind} whose data does not match its shape (or is too large)")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise WireError(f"a {kind} whose data is not base64") from e
    if len(raw) != numel * np_dtype.itemsize:
        raise WireError(f"a {kind} whose data does not match its shape")
    arr = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="), copy=True).reshape(shape)
    if kind == "tensor":
        import torch

        out = torch.from_numpy(arr)
        return out.to(torch.bfloat16) if spec["dtype"] == "bfloat16" else out
    return arr


def decode(x, refs=None, depth: int = 0):
    """Plain data from :func:`encode`'s output. ``refs(dict) -> object`` resolves references; without it
    a reference decodes to :class:`Opaque`."""
    if depth > MAX_DEPTH:
        raise WireError("nested too deeply")
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if not isinstance(x, dict) or len(x) != 1:
        raise WireError("an unknown kind of value")
    (kind, v), = x.items()
    if kind in ("list", "tuple"):
        if not isinstance(v, list):
            raise WireError("a bad list")
        out = [decode(u, refs, depth + 1) for u in v]
        return out if kind == "list" else tuple(out)
    if kind == "dict":
        if not isinstance(v, list) or not all(isinstance(p, list) and len(p) == 2 for p in v):
            raise WireError("a bad dict")
        out = {}
        for k, u in v:
            k = decode(k, refs, depth + 1)
            if not isinstance(k, (str, int, float, bool, tuple, type(None))):
                raise WireError("a dict key that is not a plain value")
            out[k] = decode(u, refs, depth + 1)
        return out
    if kind == "bigint":
        if not isinstance(v, str) or len(v) > 4000 or not v.lstrip("-").isdigit():
            raise WireError("a bad integer")
        return int(v)
    if kind == "float":
        return _float(x)
    if kind in ("tensor", "ndarray"):
        return _array(v, kind)
    if kind == "sympy":
        return parse_sympy(v)
    if kind == "schedule":
        import ddpm

        betas = decode(v, None, depth + 1)
        return ddpm.Schedule(betas)
    if kind == "generator":
        import torch

        if not isinstance(v, list) or len(v) > 100_000 or not all(isinstance(b, int) and 0 <= b < 256 for b in v):
            raise WireError("a bad generator state")
        g = torch.Generator()
        g.set_state(torch.tensor(v, dtype=torch.uint8))
        return g
    if kind in ("callable", "cb", "ref", "opaque"):
        if refs is not None:
            return refs(x)
        return Opaque(str(v)[:100])
    raise WireError(f"an unknown kind of value {kind[:40]!r}")


class Opaque:
    """A value the kernel could not send as data (its type name only)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


def parse_sympy(text: str):
    """A SymPy expression from ``srepr`` text, built without ``eval``: only calls of SymPy classes (and of
    the functions ``srepr`` writes) on numbers, strings, booleans and such calls are accepted."""
    import sympy as sp

    if not isinstance(text, str) or len(text) > MAX_SYMPY_CHARS:
        raise WireError("a SymPy expression that is not text or is too long")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise WireError("a SymPy expression that does not parse") from None

    def build(node, depth=0):
        if depth > 200:
            raise WireError("a SymPy expression nested too deeply")
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            if isinstance(node.value, int) and abs(node.value) > 10**300:
                raise WireError("an integer too large")
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return -build(node.operand, depth + 1)
        if isinstance(node, (ast.Tuple, ast.List)):
            elts = tuple(build(e, depth + 1) for e in node.elts)
            if any(isinstance(e, str) for e in elts):
                raise WireError("a SymPy expression with text where SymPy takes none")
            return elts
        if isinstance(node, ast.Name) and isinstance(getattr(sp, node.id, None), sp.Basic):
            return getattr(sp, node.id)  # a constant: pi, E, I, oo, nan
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            f = getattr(sp, node.func.id, None)
            ok = node.func.id[:1].isalpha() and "Matrix" not in node.func.id and (
                (isinstance(f, type) and issubclass(f, sp.Basic))
                or isinstance(f, sp.FunctionClass)
            )
            if not ok:
                raise WireError(f"a SymPy expression calling {node.func.id[:40]!r}")
            args = [build(a, depth + 1) for a in node.args]
            # text reaches a constructor only as a symbol's name or a float's digits: other constructors
            # would hand it to sympify, which evaluates text
            for k, a in enumerate(args):
                if isinstance(a, str) and not (
                    k == 0 and (node.func.id in ("Symbol", "Dummy") and _NAME.fullmatch(a)
                                or node.func.id == "Float" and _NUMBER.fullmatch(a))
                ):
                    raise WireError("a SymPy expression with text where SymPy takes none")
            kwargs = {}
            for k in node.keywords:
                if k.arg is None:
                    raise WireError("a SymPy expression with ** arguments")
                kwargs[k.arg] = build(k.value, depth + 1)
                if not isinstance(kwargs[k.arg], (bool, int, type(None))):
                    raise WireError("a SymPy expression with a keyword argument that is not a flag or number")
            try:
                return f(*args, **kwargs)
            except Exception as e:  # SymPy refused the arguments
                raise WireError(f"a SymPy expression SymPy cannot build ({type(e).__name__})") from None
        raise WireError("a SymPy expression with something other than SymPy calls and literals")

    out = build(tree.body)
    if not isinstance(out, sp.Basic):
        raise WireError("a SymPy expression that is not a SymPy object")
    return out
