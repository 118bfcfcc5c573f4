"""lemmse_lite.plotting: the layout and titles of image_grid (the one grid drawer, also used by
compare) and the figures built on it."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lemmse_lite import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _img(value, shape=(1, 4, 4)):
    return torch.full(shape, float(value))


def _visible(fig):
    return [ax for ax in fig.axes if ax.axison]


def test_flat_list_with_ncols_and_titles_per_image():
    images = [_img(k / 10) for k in range(5)]
    fig = plotting.image_grid(images, titles=[f"t{k}" for k in range(5)], ncols=3)
    assert len(fig.axes) == 6 and len(_visible(fig)) == 5  # 2 x 3, the last cell blank
    assert [ax.get_title() for ax in fig.axes[:5]] == ["t0", "t1", "t2", "t3", "t4"]
    for k, ax in enumerate(fig.axes[:5]):  # image k in cell k, row by row
        assert np.allclose(ax.get_images()[0].get_array(), k / 10)


def test_rows_titles_per_column_and_row_labels():
    rows = [[_img(0.1), _img(0.2)], [_img(0.3)]]
    fig = plotting.image_grid(rows, titles=["a", "b"], row_labels=["r0", "r1"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "", ""]
    assert fig.axes[0].get_ylabel() == "r0" and fig.axes[2].get_ylabel() == "r1"
    assert not fig.axes[3].axison


def test_titles_per_cell():
    rows = [[_img(0), _img(0)], [_img(0), _img(0)]]
    fig = plotting.image_grid(rows, titles=["a", "b", "c", "d"], suptitle="S")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "d"]
    assert fig._suptitle.get_text() == "S"


@pytest.mark.parametrize("shape, shown", [((4, 4), (4, 4)), ((1, 4, 4), (4, 4)), ((1, 1, 4, 4), (4, 4)),
                                          ((3, 4, 4), (4, 4, 3))])
def test_image_shapes_and_clipping(shape, shown):
    img = torch.linspace(-1, 2, int(np.prod(shape))).reshape(shape)
    fig = plotting.image_grid([img])
    arr = fig.axes[0].get_images()[0].get_array()
    assert arr.shape == shown and float(arr.min()) == 0.0 and float(arr.max()) == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        plotting.image_grid([])
    with pytest.raises(ValueError, match="titles must have 2 .* got 3"):
        plotting.image_grid([[_img(0), _img(0)], [_img(0), _img(0)]], titles=["a", "b", "c"])
    with pytest.raises(ValueError, match="row_labels must have 1"):
        plotting.image_grid([_img(0)], row_labels=["a", "b"])
    with pytest.raises(ValueError, match="one image"):
        plotting.image_grid([torch.zeros(2, 1, 4, 4)])


def test_comparison_figure_titles_carry_the_psnr():
    rows = {"denoising": {"noisy": _img(0.2), "LE-MMSE": _img(0.4)}}
    fig = plotting.comparison_figure(rows, ["noisy", "LE-MMSE"], {"denoising": {"LE-MMSE": 31.26}})
    assert [ax.get_title() for ax in fig.axes] == ["noisy", "LE-MMSE\n31.3 dB"]
    assert fig.axes[0].get_ylabel() == "denoising"


def test_psnr_curves_and_pixel_map():
    fig = plotting.psnr_curves([1, 2, 3], {"a": [1, 2, 3], "b": [3, 2, 1]}, "x", logx=True, title="T")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"] and ax.get_xscale() == "log"
    fig, ax = plt.subplots()
    im = plotting.pixel_map(ax, torch.tensor([[1.0, 10.0], [100.0, 1000.0]]), log=True, label="N")
    assert np.allclose(im.get_array(), [[0, 1], [2, 3]])


def test_save_figure_writes_a_whole_png_atomically(tmp_path):
    import matplotlib.pyplot as plt

    from lemmse_lite.plotting import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "f.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.png"]  # no temporary left
    assert not plt.fignum_exists(fig.number)  # closed
