"""The book's animations: matplotlib's HTML player made offline and light."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib import animation  # noqa: E402

from ddpm.plotting import offline_animation_html  # noqa: E402


def test_animation_html_makes_no_network_request_and_gets_lighter():
    fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
    (line,) = ax.plot([0, 1], [0, 1])
    anim = animation.FuncAnimation(fig, lambda k: line.set_ydata([0, k]), frames=4)
    html = anim.to_jshtml(embed_frames=True)
    plt.close(fig)
    assert "https://" in html  # matplotlib links font-awesome from a CDN
    out = offline_animation_html(html, "a line that tilts up frame by frame")
    assert "https://" not in out and "fa fa-" not in out
    assert 'alt="a line that tilts up frame by frame"' in out and out.count("data:image/png;base64,") == 4
    assert len(out) < len(html)
    with pytest.raises(ValueError, match="alt"):
        offline_animation_html(html, "anim")
