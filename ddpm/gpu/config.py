"""The switches of the GPU path, as frozen data: what :func:`ddpm.gpu.accelerate` builds and how it compiles.

:func:`for_training` turns a :class:`ddpm.TrainConfig` into a :class:`GpuConfig`; it is the one place that says what
``compile=True`` means on CUDA (``compile_mode="auto"``: the fastest path measured for the DDPM U-Net).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

import torch

__all__ = ["GpuConfig", "GroupNormTuning", "COMPILE_MODES", "for_training", "resolve_compile_mode"]

# torch.compile's modes, and "auto": the package's choice (see resolve_compile_mode)
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class GroupNormTuning:
    """Launch parameters of the Triton GroupNorm kernels: elements per tile (rows of the NHWC (H*W, C) slab times
    the padded channels), warps of the streaming kernels (statistics / reductions, the output passes), warps of the
    per-image kernels, and the reduction programs to aim for per multiprocessor."""

    elems: int = 4096
    reduce_warps: int = 8
    apply_warps: int = 4
    combine_warps: int = 8
    programs_per_sm: int = 2

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"GroupNormTuning.{f.name} must be an int >= 1, got {v!r}")
        for name in ("elems", "reduce_warps", "apply_warps", "combine_warps"):
            v = getattr(self, name)
            if v & (v - 1):
                raise ValueError(f"GroupNormTuning.{name} must be a power of two, got {v}")

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.elems, self.reduce_warps, self.apply_warps, self.combine_warps, self.programs_per_sm)


@dataclass(frozen=True)
class GpuConfig:
    """How :func:`ddpm.gpu.accelerate` runs a network.

    ``channels_last``: NHWC weights and activations (cuDNN's fast convolutions; 4-d tensors only).
    ``triton_groupnorm``: on CUDA channels-last tensors, every GroupNorm with its shift, SiLU and dropout in the
    package's Triton kernels (where Triton imports); False: PyTorch's operators (fused by the compiler).
    ``compile``: ``torch.compile`` the copy in place, in ``compile_mode`` (no ``"auto"`` here: see
    :func:`resolve_compile_mode`), with a fixed batch shape. ``force_layout``: switch the compiler's
    channels-last layout planning on for a channels-last network (its heuristic turns it off for the U-Net).
    ``inductor_options``: further compiler options, as ``(name, value)`` pairs. ``groupnorm_tuning``: the
    Triton kernels' launch parameters.
    """

    channels_last: bool = True
    triton_groupnorm: bool = True
    compile: bool = False
    compile_mode: str = "default"
    force_layout: bool = True
    inductor_options: tuple = ()
    groupnorm_tuning: GroupNormTuning = GroupNormTuning()

    def __post_init__(self):
        for name in ("channels_last", "triton_groupnorm", "compile", "force_layout"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GpuConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.compile_mode not in COMPILE_MODES[1:]:
            raise ValueError(f"GpuConfig.compile_mode must be one of {', '.join(COMPILE_MODES[1:])}; got {self.compile_mode!r}")
        opts = self.inductor_options.items() if isinstance(self.inductor_options, dict) else self.inductor_options
        try:
            opts = tuple((str(k), v) for k, v in opts)
        except (TypeError, ValueError):
            raise ValueError(f"GpuConfig.inductor_options must be (name, value) pairs, got {self.inductor_options!r}") from None
        object.__setattr__(self, "inductor_options", opts)
        if not isinstance(self.groupnorm_tuning, GroupNormTuning):
            raise ValueError(f"GpuConfig.groupnorm_tuning must be a GroupNormTuning, got {self.groupnorm_tuning!r}")

    @property
    def cudagraphs(self) -> bool:
        """True where the compiled network replays CUDA graphs (the caller marks each step's start)."""
        return self.compile and self.compile_mode in CUDAGRAPH_MODES

    def replace(self, **changes) -> "GpuConfig":
        return dataclasses.replace(self, **changes)


def resolve_compile_mode(mode: str, *, cuda_graph: bool = False) -> str:
    """``torch.compile``'s mode for a training ``compile_mode``: ``"auto"`` is ``"reduce-overhead"`` (the network's
    forward and backward replayed as CUDA graphs), or ``"default"`` when the whole step is captured in one CUDA graph
    anyway (``cuda_graph=True``); any other mode is kept."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}; got {mode!r}")
    if mode == "auto":
        return "default" if cuda_graph else "reduce-overhead"
    return mode


def for_training(config, device: torch.device | str) -> GpuConfig | None:
    """The :class:`GpuConfig` of a :class:`ddpm.TrainConfig` on ``device``; None for the plain network (on the CPU,
    or with neither ``compile`` nor ``channels_last``).

    ``compile=True`` with ``compile_mode="auto"`` (the default) is the fastest path measured for the DDPM U-Net:
    channels-last, the Triton GroupNorm kernels, the compiler's layout planning forced on, and CUDA graphs around
    the network (or the whole-step graph with ``cuda_graph=True``). An explicit ``compile_mode`` keeps
    ``channels_last`` as given: the expert flags stay for experiments.
    """
    if torch.device(device).type != "cuda" or not (config.compile or config.channels_last):
        return None
    auto = config.compile and config.compile_mode == "auto"
    return GpuConfig(channels_last=bool(config.channels_last or auto), compile=bool(config.compile),
                     compile_mode=resolve_compile_mode(config.compile_mode, cuda_graph=config.cuda_graph))
