"""ddpm: denoising diffusion (DDPM and DDIM), one function per equation.

Notation, paper -> code (the book's notation page has the full table)::

    t = 1..T                   index t of every length-(T+1) tensor; t = 0 is clean data
    beta_t, alpha_t, abar_t    Schedule.betas, .alphas, .alpha_bars (abar_0 = 1)
    beta~_t                    Schedule.posterior_variance (DDPM eq. 7)
    SNR(t), lambda_t           Schedule.snr, Schedule.log_snr
    DDIM's alpha_t             our abar_t
    q(x_t | x0)                q_sample, q_mean_variance        (DDPM eq. 4)
    q(x_{t-1} | x_t, x0)       q_posterior                      (DDPM eqs. 6-7)
    mu_theta (eps form)        posterior_mean_from_eps          (DDPM eq. 11)
    Algorithm 1 / eq. 14       loss_simple
    Algorithm 2                ddpm_step, sample_ddpm, ddpm_trajectory
    DDIM eqs. 12, 16           ddim_step, ddim_sigma, ddim_eta_max, sample_ddim, ddim_trajectory

Arguments: the maths takes ``(schedule, x_t, t, ...)``, the losses ``(model, schedule, x0, ...)``,
the samplers ``(model, schedule, shape, ...)``; ``noise``, ``generator``, ``progress``, every
``seed``, and the settings ``clip``, ``variance``, ``eta``, ``steps``, ``spacing`` and ``x_T`` are
keyword-only everywhere.
"""

from .schedule import Schedule
from .forward import q_step, q_sample, q_mean_variance, marginal_variance
from .posterior import (
    q_posterior,
    predict_x0,
    x0_to_eps,
    v_target,
    v_to_x0,
    v_to_eps,
    eps_to_v,
    x0_to_v,
    posterior_mean_from_eps,
)
from .samplers import (
    timesteps,
    ddpm_step,
    ddim_step,
    ddim_sigma,
    ddim_eta_max,
    sample_ddpm,
    sample_ddim,
    ddpm_trajectory,
    ddim_trajectory,
)
from .losses import (
    loss_simple,
    gaussian_kl,
    prior_loss,
    vb_term,
    decoder_nll,
    decoder_variance,
    discretized_gaussian_log_likelihood,
    variational_bound,
    bits_per_dim,
)
from .testbed import GaussianMixture
from .adapters import DiffusersEps, from_diffusers
from .linear_gaussian import EpsOffset, LinearGaussianChain

__version__ = "0.1.0"

# --- models, training, data, metrics (book chapters "Training and sampling" and "DDIM"): exported below this line ---
from .nets import MLP, MLPConfig, UNet, UNetConfig, sinusoidal_embedding
from .data import load_dataset, read_idx, load_cifar10, load_array, make_toy, toy_mixture, DATASETS, TOYS
from .ema import EMA
from .train import TrainConfig, TrainResult, train
from .checkpoint import Checkpoint, save_checkpoint, load_checkpoint, latest_checkpoint
from .metrics import sliced_wasserstein, energy_distance, frechet_distance, distance_report
from .gpu import FastEps
from .step import TrainStep

__all__ = [
    # the maths: (schedule, x_t, t, ...)
    "Schedule", "q_step", "q_sample", "q_mean_variance", "marginal_variance", "q_posterior", "predict_x0",
    "x0_to_eps", "v_target", "v_to_x0", "v_to_eps", "eps_to_v", "x0_to_v", "posterior_mean_from_eps",
    "timesteps", "ddpm_step", "ddim_step", "ddim_sigma", "ddim_eta_max",
    # the samplers: (model, schedule, shape, ...)
    "sample_ddpm", "sample_ddim", "ddpm_trajectory", "ddim_trajectory",
    # the losses: (model, schedule, x0, ...)
    "loss_simple", "gaussian_kl", "prior_loss", "vb_term", "decoder_nll", "decoder_variance",
    "discretized_gaussian_log_likelihood", "variational_bound", "bits_per_dim",
    "GaussianMixture", "DiffusersEps", "from_diffusers", "EpsOffset", "LinearGaussianChain",
    # models, training, data, metrics
    "MLP", "MLPConfig", "UNet", "UNetConfig", "sinusoidal_embedding",
    "load_dataset", "read_idx", "load_cifar10", "load_array", "make_toy", "toy_mixture", "DATASETS", "TOYS",
    "EMA", "train", "TrainConfig", "TrainResult", "TrainStep",
    "Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
    "sliced_wasserstein", "energy_distance", "frechet_distance", "distance_report", "FastEps",
]
