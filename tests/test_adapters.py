"""ddpm.from_diffusers: the t = 1..T -> 0..T-1 mapping, the output object, the checks; with a real tiny
diffusers UNet2DModel when diffusers is importable (nothing is downloaded), else with a stand-in."""

import pytest
import torch

import ddpm


class StandIn(torch.nn.Module):
    """diffusers' calling convention: ``unet(sample, timestep)`` returns an object with ``.sample``."""

    class Out:
        def __init__(self, sample):
            self.sample = sample

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.seen = []

    def forward(self, sample, timestep):
        self.seen.append(timestep.clone())
        return self.Out(self.w * sample + timestep.to(sample.dtype).reshape(-1, *[1] * (sample.dim() - 1)))


def test_maps_t_to_zero_based_and_unwraps():
    u = StandIn()
    m = ddpm.from_diffusers(u, T=10)
    x = torch.randn(3, 1, 4, 4)
    out = m(x, torch.tensor([1, 5, 10]))
    assert u.seen[-1].tolist() == [0, 4, 9] and u.seen[-1].dtype == torch.long
    torch.testing.assert_close(out, 0.5 * x + torch.tensor([0.0, 4.0, 9.0]).reshape(3, 1, 1, 1))
    m(x, 7)  # one int for the batch
    assert u.seen[-1].tolist() == [6, 6, 6]
    assert list(m.parameters()) == [u.w]  # .to / optimisers / the samplers' device inference see the unet


@pytest.mark.parametrize(
    "t, match",
    [(0, "t must be in 1..10"), (11, "t must be in 1..10"), (torch.tensor([1.0, 2.0, 3.0]), "integer tensor"),
     (torch.tensor([1, 2]), "t has 2 entries")],
)
def test_bad_t(t, match):
    m = ddpm.from_diffusers(StandIn(), T=10)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(3, 2), t)


def test_bad_wrapped():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        ddpm.from_diffusers(lambda x, t: x)
    with pytest.raises(ValueError, match="T must be an int"):
        ddpm.from_diffusers(StandIn(), T=0)

    class Wrong(torch.nn.Module):
        def forward(self, sample, timestep):
            return (sample[:, :1],)

    with pytest.raises(ValueError, match="must return eps of shape"):
        ddpm.from_diffusers(Wrong())(torch.randn(2, 3, 4, 4), 1)


def test_real_unet2dmodel_in_the_samplers():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()
    m = ddpm.from_diffusers(unet, T=20)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(m(x, torch.tensor([1, 20])), unet(x, torch.tensor([0, 19])).sample)
        s = ddpm.Schedule.linear(20, 5e-3, 0.4)
        out = ddpm.sample_ddim(m, s, (2, 1, 8, 8), steps=4, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
