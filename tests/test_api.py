"""The package's API promise, checked on every public callable: the arguments the package docstring
names (``noise``, ``generator``, ``progress``, ``seed`` and the sampler settings) are keyword-only,
and the maths, losses and samplers take their arguments in the documented order. Also: ``import
ddpm`` works under ``python -OO`` (docstrings stripped)."""

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import ddpm

# Keyword-only wherever they appear (a required tensor of an equation, such as the Gaussian's
# ``variance`` in discretized_gaussian_log_likelihood, is an operand, not a setting: settings have defaults).
ALWAYS = {"noise", "generator", "progress"}
SETTINGS = {"clip", "variance", "eta", "steps", "spacing", "x_T"}
# Dataclasses of plain data: their fields are records, not call options.
RECORDS = {"TrainConfig", "TrainResult", "Checkpoint", "MLPConfig", "UNetConfig"}
SKIP_MODULES = ("ddpm.__main__",)
OPTIONAL = ("triton",)  # GPU-only modules import it; without it they are skipped


def _modules():
    yield ddpm
    for info in pkgutil.walk_packages(ddpm.__path__, "ddpm."):
        if info.name in SKIP_MODULES:
            continue
        try:
            yield importlib.import_module(info.name)
        except ImportError as e:
            if e.name in OPTIONAL:
                continue
            raise


def _callables():
    """(qualified name, callable) for every public function, class and public method of the package."""
    seen = set()
    for mod in _modules():
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for name in names:
            obj = getattr(mod, name)
            if mod is not ddpm and getattr(obj, "__module__", None) != mod.__name__:
                continue  # imported from elsewhere: checked where it is defined
            if not callable(obj) or id(obj) in seen or name in RECORDS:
                continue
            seen.add(id(obj))
            yield f"{mod.__name__}.{name}", obj
            if inspect.isclass(obj):
                for m, f in vars(obj).items():
                    if not m.startswith("_") and callable(getattr(obj, m, None)) and id(f) not in seen:
                        seen.add(id(f))
                        yield f"{mod.__name__}.{name}.{m}", getattr(obj, m)


def _params(f):
    try:
        return list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return None


CALLABLES = [(n, f) for n, f in _callables() if _params(f) is not None]


def test_the_walk_finds_the_public_api():
    found = {n.rsplit(".", 1)[-1] for n, _ in CALLABLES}
    for name in ("train", "load_dataset", "make_toy", "sliced_wasserstein", "distance_report", "sample_ddim", "q_sample"):
        assert name in found
    assert len(CALLABLES) > 80


def test_all_names_exist():
    assert sorted(set(ddpm.__all__)) == sorted(ddpm.__all__)
    for name in ddpm.__all__:
        assert hasattr(ddpm, name), name
    public = {n for n, v in vars(ddpm).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert public - {"annotations"} <= set(ddpm.__all__) | {"__version__"}, public - set(ddpm.__all__)


def _must_be_keyword(p: inspect.Parameter) -> bool:
    if p.name in ALWAYS or "seed" in p.name:
        return True
    return p.name in SETTINGS and p.default is not inspect.Parameter.empty


@pytest.mark.parametrize("name,f", CALLABLES, ids=[n for n, _ in CALLABLES])
def test_settings_are_keyword_only(name, f):
    bad = [p.name for p in _params(f) if _must_be_keyword(p) and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert not bad, f"{name}{inspect.signature(f)}: {bad} must be keyword-only"


def _positional(f):
    return [p.name for p in _params(f) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


MATHS = [n for n, v in vars(ddpm).items() if inspect.isfunction(v) and v.__module__ in
         ("ddpm.forward", "ddpm.posterior", "ddpm.samplers") and _positional(v)[:1] == ["schedule"]]
LOSSES = [n for n, v in vars(ddpm).items() if inspect.isfunction(v) and v.__module__ == "ddpm.losses"
          and "model" in _positional(v)]
SAMPLERS = ["sample_ddpm", "sample_ddim", "ddpm_trajectory", "ddim_trajectory"]


@pytest.mark.parametrize("name", MATHS)
def test_maths_order_schedule_state_t(name):
    pos = _positional(getattr(ddpm, name))
    assert pos[0] == "schedule"
    if "t" in pos and len(pos) > 2 and pos[1] not in ("t",):
        assert pos[2] == "t", f"{name}{tuple(pos)}: expected (schedule, x, t, ...)"


@pytest.mark.parametrize("name", LOSSES)
def test_losses_order_model_schedule_x0(name):
    assert _positional(getattr(ddpm, name))[:3] == ["model", "schedule", "x0"], name


@pytest.mark.parametrize("name", SAMPLERS)
def test_samplers_order_model_schedule_shape(name):
    assert _positional(getattr(ddpm, name)) == ["model", "schedule", "shape"], name


def test_the_order_lists_are_not_empty():
    assert {"q_sample", "q_posterior", "ddpm_step", "ddim_step", "predict_x0"} <= set(MATHS)
    assert {"loss_simple", "vb_term", "decoder_nll", "variational_bound", "bits_per_dim"} <= set(LOSSES)


def test_one_name_per_function():
    """No aliases: each public function of ``ddpm`` is exported under one name."""
    funcs = [getattr(ddpm, n) for n in ddpm.__all__ if inspect.isfunction(getattr(ddpm, n))]
    assert len({id(f) for f in funcs}) == len(funcs)


def test_import_under_python_OO(tmp_path):
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(ddpm.__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    code = "import ddpm, ddpm.cli; assert ddpm.sample_ddim.__doc__ is None; ddpm.cli._parser()"
    r = subprocess.run([sys.executable, "-OO", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
