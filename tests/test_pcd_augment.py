"""PCD with data augmentation (Carbone et al. 2023, §4.3 and Table 1, second row; the augmentation of Du et al.
2021 on the persistent chains): the augmentations do what they say, the default leaves PCD's step bit-identical,
bad values and non-image targets are refused at configuration, and it learns on 8x8 digits."""

import bench  # noqa: F401  (binds our own `datasets` package first)

# isort: split
import pytest
import torch
from tiny_images import Digits8, assert_learns

import datasets
from algorithms.augment import augment, color_distortion, flip_mask, gaussian_blur, hflip, resized_crop
from algorithms.base import ConfigError, Problem, build_config
from algorithms.contrastive import contrastive_update, make_optimizer
from algorithms.energies import make_energy
from algorithms.pcd import PCD, PCDConfig
from algorithms.samplers import ula

# an asymmetric 2-channel 2x3 image (values in [-1, 1]) and its left-right mirror
IMG = torch.tensor([[[-1.0, -0.5, 0.0], [0.1, 0.2, 0.9]],
                    [[0.3, 0.4, -0.8], [1.0, -0.2, 0.6]]])
MIRROR = torch.tensor([[[0.0, -0.5, -1.0], [0.9, 0.2, 0.1]],
                       [[-0.8, 0.4, 0.3], [0.6, -0.2, 1.0]]])
SHAPE = (2, 2, 3)


# ---------------------------------------------------------------- the augmentations themselves
def test_flip_maps_an_asymmetric_image_to_its_mirror():
    x = IMG.reshape(1, -1).repeat(2, 1)
    out = hflip(x.reshape(2, *SHAPE), torch.tensor([True, False])).reshape(2, -1)
    assert torch.equal(out[0], MIRROR.reshape(-1)) and torch.equal(out[1], IMG.reshape(-1))


def test_flip_flips_about_half_and_nothing_else():
    """Over 4,000 draws with a fixed generator: each image comes out either unchanged or exactly mirrored,
    about half of them mirrored, and the same generator seed gives the same flips."""
    n = 4000
    x = IMG.reshape(1, -1).repeat(n, 1)
    out = augment(x, SHAPE, "flip", generator=torch.Generator().manual_seed(0))
    same = (out == IMG.reshape(-1)).all(1)
    mirrored = (out == MIRROR.reshape(-1)).all(1)
    assert (same ^ mirrored).all()
    assert abs(mirrored.float().mean().item() - 0.5) < 0.03
    again = augment(x, SHAPE, "flip", generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert abs(flip_mask(n, torch.Generator().manual_seed(1), p=0.2).float().mean().item() - 0.2) < 0.03


def test_none_returns_its_input_and_draws_nothing():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 12)
    assert augment(x, SHAPE, "none", generator=g) is x
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(3)))


def test_du2021_parts():
    """Each part of Du et al.'s augmentation on hand-made images: a crop of the whole image is the identity, a
    constant image stays constant under crop and blur, grayscale makes the channels equal, blur keeps a
    constant image and averages a point, and the whole pipeline stays in [-1, 1] and is fixed by the generator."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(6, 3, 8, 8, generator=g)
    assert torch.allclose(resized_crop(u, g, scale=(1.0, 1.0), ratio=(1.0, 1.0)), u, atol=1e-6)
    const = torch.full((4, 3, 8, 8), 0.3)
    assert torch.allclose(resized_crop(const, g), const, atol=1e-6)
    assert torch.allclose(gaussian_blur(const, g, p=1.0), const, atol=1e-6)
    gray = color_distortion(u, g, p_jitter=0.0, p_gray=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.equal(color_distortion(u, g, p_jitter=0.0, p_gray=0.0), u)
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 4] = 1.0
    blurred = gaussian_blur(dot, g, p=1.0)
    assert blurred[0, 0, 4, 4] < 1.0 and blurred[0, 0, 4, 5] > 0 and abs(blurred.sum().item() - 1.0) < 1e-5
    x = torch.rand(64, 3 * 8 * 8) * 2 - 1
    a = augment(x, (3, 8, 8), "du2021", generator=torch.Generator().manual_seed(5))
    b = augment(x, (3, 8, 8), "du2021", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.allclose(a, x)


def test_color_distortion_is_torchvisions_brightness_contrast_saturation_and_grayscale():
    """Each image's factors, drawn from the generator in the documented order (jitter or not, brightness,
    contrast, saturation, grayscale or not), applied by torchvision's own adjust_* and rgb_to_grayscale (the
    definitions Du et al. used) give our batch to rounding: torchvision's gray weights are 0.2989 / 0.587 / 0.114."""
    import torchvision.transforms.functional as TF

    n, s = 64, 1.0
    u = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = color_distortion(u, torch.Generator().manual_seed(2), s=s, p_jitter=0.8, p_gray=0.2)
    g = torch.Generator().manual_seed(2)
    jit = torch.rand(n, generator=g) < 0.8
    b, c, sat = ((1 - 0.8 * s) + 1.6 * s * torch.rand(n, generator=g) for _ in range(3))
    gray = torch.rand(n, generator=g) < 0.2
    assert 0 < int(jit.sum()) < n and 0 < int(gray.sum()) < n  # every branch is taken
    for i in range(n):
        want = u[i]
        if jit[i]:
            want = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(want, b[i]), c[i]), sat[i])
        if gray[i]:
            want = TF.rgb_to_grayscale(want, num_output_channels=3)
        torch.testing.assert_close(out[i], want, atol=2e-4, rtol=0)


def test_gaussian_blur_is_torchvisions_with_the_drawn_sigma():
    """Blur or not and sigma drawn in that order; the blurred images are torchvision's gaussian_blur (kernel 5,
    reflect padding) at each image's sigma."""
    import torchvision.transforms.functional as TF

    n = 24
    u = torch.rand(n, 3, 9, 9, generator=torch.Generator().manual_seed(4))
    out = gaussian_blur(u, torch.Generator().manual_seed(5), p=0.5, sigma=(0.1, 2.0))
    g = torch.Generator().manual_seed(5)
    on = torch.rand(n, generator=g) < 0.5
    sig = 0.1 + 1.9 * torch.rand(n, generator=g)
    assert 0 < int(on.sum()) < n
    for i in range(n):
        want = TF.gaussian_blur(u[i], [5, 5], [float(sig[i])] * 2) if on[i] else u[i]
        torch.testing.assert_close(out[i], want, atol=1e-5, rtol=0)


def test_resized_crop_samples_the_drawn_box():
    """On ramps (channel 0 rises along the width, channel 1 along the height, by the pixel centres' normalised
    coordinates) a crop is again a ramp: output coordinate t reads the input at f t + c, f the crop's width (or
    height) fraction sqrt(area * ratio) (sqrt(area / ratio)) and c its drawn centre, clamped to the outer pixel
    centres (bilinear, border padding)."""
    n, h, w = 32, 12, 16
    ys, xs = ((2 * torch.arange(k) + 1) / k - 1 for k in (h, w))  # pixel centres in [-1, 1] coordinates
    ramps = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)]).expand(n, 2, h, w)
    out = resized_crop(ramps, torch.Generator().manual_seed(3), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    g = torch.Generator().manual_seed(3)
    area = 0.08 + 0.92 * torch.rand(n, generator=g)
    lo, hi = torch.log(torch.tensor(3 / 4)), torch.log(torch.tensor(4 / 3))
    r = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))
    fw, fh = torch.sqrt(area * r).clamp(max=1.0), torch.sqrt(area / r).clamp(max=1.0)
    cx = (2 * torch.rand(n, generator=g) - 1) * (1 - fw)
    cy = (2 * torch.rand(n, generator=g) - 1) * (1 - fh)
    assert (fw - fh).abs().max() > 0.05  # aspect ratios away from 1: width and height differ
    want_x = (fw[:, None] * xs + cx[:, None]).clamp(xs[0], xs[-1])  # (n, w)
    want_y = (fh[:, None] * ys + cy[:, None]).clamp(ys[0], ys[-1])  # (n, h)
    torch.testing.assert_close(out[:, 0], want_x[:, None, :].expand(n, h, w), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], want_y[:, :, None].expand(n, h, w), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- PCD with the option
def _pcd(target, data, **kw):
    e = make_energy("convnet_lipswish_small", target.dim, target.shape)
    cfg = build_config(PCDConfig, dict(n_persistent=16, n_steps=2, init="data", **kw), "pcd")
    return PCD(Problem(target, data), e, cfg)


def test_augment_acts_on_the_drawn_chains_not_the_positives():
    """With augment = "flip" the chain starts are the persistent states, each unchanged or mirrored; the bank
    itself and the positive batch are not touched."""
    class Tiny(Digits8):
        dim, shape = 12, SHAPE

        def __init__(self):
            pass

    t = Tiny()
    data = IMG.reshape(1, -1).repeat(16, 1)
    torch.manual_seed(0)
    alg = _pcd(t, data, augment="flip")
    bank = alg.bank.states.clone()
    x_pos = data[:8].clone()
    x0 = alg.start_chains(x_pos)
    rows = [(r == IMG.reshape(-1)).all() or (r == MIRROR.reshape(-1)).all() for r in x0]
    assert all(rows) and any((r == MIRROR.reshape(-1)).all() for r in x0)
    assert torch.equal(alg.bank.states, bank) and torch.equal(x_pos, data[:8])


@pytest.mark.parametrize("n_batch", [8, 16])  # a drawn batch of the bank, and the whole bank (003's PCD)
def test_default_step_is_bit_identical_to_plain_pcd(n_batch):
    """augment = "none" (the default) is plain PCD: the same seed gives the same negatives, the same parameters
    after the update and the same random stream afterwards as PCD written out by hand (bank draw, ULA,
    contrastive update), so no random draw was added to the default path."""
    t = Digits8()
    data = t.x[:200]
    torch.manual_seed(0)
    alg = _pcd(t, data)  # default augment
    assert alg.config.augment == "none"
    torch.manual_seed(0)
    ref_alg = _pcd(t, data)
    ref_e, ref_bank, opt = ref_alg.energy, ref_alg.bank, make_optimizer(ref_alg.energy, ref_alg.config)
    x_pos = data[:n_batch]
    torch.manual_seed(1)
    alg.step(x_pos)
    after = torch.rand(4)
    torch.manual_seed(1)
    if n_batch == len(ref_bank):
        idx, x0 = None, ref_bank.states
    else:
        idx, x0 = ref_bank.draw(n_batch)
    x_neg = ula(ref_e, x0, ref_alg.config.step_size, ref_alg.config.n_steps, ref_alg.work)
    contrastive_update(ref_e, opt, x_pos, x_neg, 0.0, ref_alg.work)
    ref_after = torch.rand(4)
    assert torch.equal(alg.negatives(), x_neg)
    assert all(torch.equal(p, q) for p, q in zip(alg.energy.parameters(), ref_e.parameters(), strict=True))
    assert torch.equal(after, ref_after)


def test_bad_value_and_non_image_target_are_refused_in_one_line():
    with pytest.raises(ConfigError) as e:
        build_config(PCDConfig, {"augment": "rotate"}, "pcd")
    msg = str(e.value)
    assert "\n" not in msg and "augment" in msg and "none, flip, du2021" in msg and "'rotate'" in msg
    cfg = build_config(PCDConfig, {"augment": "flip"}, "pcd")
    toy = datasets.get_target("two_mode")
    with pytest.raises(ConfigError) as e:
        PCD.check_target(cfg, toy)
    assert "\n" not in str(e.value) and "image target" in str(e.value) and "two_mode" in str(e.value)
    PCD.check_target(build_config(PCDConfig, {}, "pcd"), toy)  # the default runs anywhere
    PCD.check_target(cfg, Digits8.__new__(Digits8))
    # building the algorithm on a vector target fails the same way, before any chain is made
    with pytest.raises(ConfigError, match="image target"):
        PCD(Problem(toy, toy.sample(8)), make_energy("toy_mlp", 2), cfg)


@pytest.mark.parametrize("value, match", [
    ('"flip"', "pcd_aug/two_mode: augment = 'flip' needs an image target; 'two_mode' is not one"),
    ('"rotate"', "parameter 'augment' must be one of none, flip, du2021, got 'rotate'"),
])
def test_run_refuses_before_any_cell_in_one_line(value, match, capsys, tmp_path, monkeypatch):
    """`bench run` on a suite asking for an augmentation on a vector target (or an unknown one): exit 2, one line
    naming the cell, and no cell run."""
    from bench import sweep as sweep_mod
    from bench.cli import main

    def boom(*a, **k):
        raise AssertionError("a cell ran before validation finished")

    monkeypatch.setattr(sweep_mod, "run_cell", boom)
    p = tmp_path / "s.toml"
    p.write_text('targets = ["two_mode"]\nalgorithms = ["pcd_aug"]\n'
                 f'[variants.pcd_aug]\nalgorithm = "pcd"\naugment = {value}\n'
                 '[fidelity.quick.defaults]\nn_iters = 2\nn_data = 64\nbatch_size = 8\n')
    out = tmp_path / "out"
    assert main(["run", "--suite", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: ") and match in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["flip", "du2021"])
def test_pcd_with_augmentation_learns_on_digits(kind):
    """25 iterations on 8x8 digits: the model energy of held-out digits drops below that of uniform noise by more
    than it did at initialisation (the pattern of tests/test_image_flows.py)."""
    torch.manual_seed(0)
    t = Digits8()
    data, test = t.x[:1200], t.x[1500:1700]
    e = make_energy("convnet_lipswish_small", 64, t.shape)
    cfg = build_config(PCDConfig, dict(n_persistent=128, n_steps=5, init="uniform", lr=1e-3, augment=kind), "pcd")
    alg = PCD(Problem(t, data), e, cfg)
    ref = torch.rand(200, 64) * 2 - 1
    assert_learns(alg, e, data, test, ref)
    assert alg.negatives().shape == (32, 64)
