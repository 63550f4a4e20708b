"""Noise-prediction networks: ``model(x_t, t) -> eps_hat`` with ``t`` a LongTensor ``(B,)`` on ``1..T``."""

from .embedding import sinusoidal_embedding
from .mlp import MLP, MLPConfig
from .unet import UNet, UNetConfig
