"""Use a network from another library as this package's ``model(x_t, t) -> eps``.

The only adapter is for diffusers' ``UNet2DModel`` (and any module with its calling convention,
``unet(sample, timestep).sample``). Two conventions differ: diffusers counts the time index from 0 to
``T - 1`` (its scheduler's ``timesteps``), the equations of the book and this package from 1 to ``T``
(``t = 0`` is clean data); and diffusers returns an output object, not a tensor. The adapter maps our
``t`` to diffusers' ``t - 1`` and returns the tensor, so that ``ddpm.sample_ddim(from_diffusers(unet),
schedule, shape)`` samples exactly what diffusers' own DDIM loop does with the same schedule.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._utils import net_times

__all__ = ["DiffusersEps", "from_diffusers"]


class DiffusersEps(nn.Module):
    """``DiffusersEps(unet)(x_t, t) = unet(x_t, t - 1).sample``: an eps-prediction diffusers network
    on the ``t = 1..T`` scale. ``t`` is checked like every ``t`` of the package (an int, or an integer
    tensor of shape ``()`` or ``(B,)``; 1..T where ``T`` is known). The wrapped network is
    ``self.unet`` (its parameters are the adapter's, so ``.to``, ``.eval`` and optimisers see them).
    """

    def __init__(self, unet: nn.Module, T: int | None = None):
        super().__init__()
        if not isinstance(unet, nn.Module):
            raise ValueError(f"from_diffusers needs a torch.nn.Module such as diffusers.UNet2DModel, got {type(unet).__name__}")
        if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1):
            raise ValueError(f"T must be an int >= 1 or None, got {T!r}")
        self.unet = unet
        self.T = T

    def forward(self, x: Tensor, t) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 1:
            raise ValueError("x must be a tensor with a batch dimension")
        t = net_times(t, x.shape[0], x.device, T=self.T, low=1)  # (B,) long; values checked where on the host
        out = self.unet(x, t - 1)  # diffusers' timesteps are 0..T-1
        eps = out.sample if hasattr(out, "sample") else (out[0] if isinstance(out, (tuple, list)) else out)
        if not isinstance(eps, Tensor) or tuple(eps.shape) != tuple(x.shape):
            raise ValueError(f"the wrapped network must return eps of shape {tuple(x.shape)}, got {getattr(eps, 'shape', type(eps).__name__)}")
        return eps


def from_diffusers(unet: nn.Module, *, T: int | None = None) -> DiffusersEps:
    """Wrap a diffusers ``UNet2DModel`` (trained to predict eps) as ``model(x_t, t) -> eps`` with this
    package's ``t = 1..T``: it calls ``unet(x_t, t - 1).sample``. Pass ``T`` (the scheduler's
    ``num_train_timesteps``) to have ``t`` checked against it; nothing is downloaded.

    Example::

        from diffusers import UNet2DModel
        model = ddpm.from_diffusers(UNet2DModel(...), T=1000)
        schedule = ddpm.Schedule.linear(1000)
        x0 = ddpm.sample_ddim(model, schedule, (16, 3, 32, 32), steps=50)
    """
    return DiffusersEps(unet, T)
