"""Photometric augmentation of box-training pairs: the operations, and how pairs and recipes apply them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trackers.box.pipeline import IMAGENET_MEAN, IMAGENET_STD, CropSizes
from trackers.train.data import photometric
from trackers.train.data.sot_pairs import PairConfig, SOTPairDataset, SyntheticSequences
from trackers.train.data.synthetic import SyntheticConfig

SYN = dict(num_frames=4, height=64, width=64, num_objects=(1, 2), object_size=(0.2, 0.35),
           textures=("noise", "stripes", "checker", "gradient"))
SIZES = CropSizes(32, 64, 4)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation: back to 0..255."""
    mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)
    return (x * std + mean) * 255.0


def _pairs(n: int = 12, **aug) -> SOTPairDataset:
    src = SyntheticSequences(3, SyntheticConfig(**SYN), seed=0)
    return SOTPairDataset([src], SIZES, n, PairConfig(max_gap=3, **aug), seed=3)


def _image(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(20, 235, (3, 16, 20))).float()


def test_operations_match_their_definitions():
    img = _image()
    grey = photometric.grayscale(img)
    assert torch.allclose(grey[0], 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])

    sol = photometric.solarize(torch.tensor([[[0.0, 127.0, 128.0, 255.0]]]).expand(3, 1, 4))
    assert sol[0, 0].tolist() == [0.0, 127.0, 127.0, 0.0]

    flat = torch.full((3, 12, 12), 90.0)
    assert torch.allclose(photometric.gaussian_blur(flat, 1.5), flat)
    blurred = photometric.gaussian_blur(img, 2.0)
    assert blurred.shape == img.shape and blurred.std() < 0.6 * img.std()
    assert abs(float(blurred.mean() - img.mean())) < 3.0

    # brightness alone: one factor in [0.8, 1.2] for the whole image
    factors, dim = [], img * 0.8  # at most 188: no clamping at 1.2x
    for seed in range(40):
        out = photometric.colour_jitter(dim, np.random.default_rng(seed), brightness=0.2)
        f = out / dim
        assert torch.allclose(f, f.flatten()[0].expand_as(f), atol=1e-5)
        factors.append(float(f.flatten()[0]))
    assert 0.8 <= min(factors) < 0.9 and 1.1 < max(factors) <= 1.2
    # contrast keeps the grey mean (no clipping at this strength on a mid-range image); saturation keeps the grey
    c = photometric.colour_jitter(img, np.random.default_rng(1), contrast=0.2)
    assert abs(float(photometric.grayscale(c)[0].mean() - grey[0].mean())) < 1e-3
    assert not torch.allclose(c, img)
    s = photometric.colour_jitter(img, np.random.default_rng(1), saturation=0.4)
    assert torch.allclose(photometric.grayscale(s), grey, atol=1e-3)
    # strength 0 draws nothing and changes nothing
    rng = np.random.default_rng(7)
    assert torch.equal(photometric.colour_jitter(img, rng), img)
    assert rng.random() == np.random.default_rng(7).random()


def test_three_augment_applies_one_choice_to_every_image():
    a, b = _image(1), _image(2)
    seen = set()
    for seed in range(30):
        out = photometric.three_augment([a, b], np.random.default_rng(seed))
        if torch.equal(out[0][0], out[0][1]) and torch.equal(out[1][0], out[1][1]):
            kind = "grey"
        elif torch.equal(out[0], photometric.solarize(a)):
            kind = "solarize"
            assert torch.equal(out[1], photometric.solarize(b))
        else:
            kind = "blur"
            assert out[0].std() < a.std() and out[1].std() < b.std()
        seen.add(kind)
    assert seen == {"grey", "solarize", "blur"}


def test_joint_flip_mirrors_crops_boxes_and_mask():
    plain, flipped = _pairs(), _pairs(flip_prob=1.0)
    for i in range(len(plain)):
        p, f = plain[i], flipped[i]
        assert torch.equal(f["search"], p["search"].flip(-1))
        assert torch.equal(f["template"], p["template"].flip(-1))
        assert torch.equal(f["template_mask"], p["template_mask"].flip(-1))
        if p["present"]:
            x1, y1, x2, y2 = p["search_box"].tolist()
            assert torch.allclose(f["search_box"], torch.tensor([1 - x2, y1, 1 - x1, y2]))
        else:
            assert f["search_box"].eq(0).all()
        x1, y1, x2, y2 = p["template_box"].tolist()
        assert torch.allclose(f["template_box"], torch.tensor([1 - x2, y1, 1 - x1, y2]))


def test_flip_each_flips_template_and_search_on_their_own_draws():
    plain, each = _pairs(40), _pairs(40, flip_prob=0.5, flip_each=True)
    kinds = set()
    for i in range(len(plain)):
        p, e = plain[i], each[i]
        fz = not torch.equal(e["template"], p["template"])
        fx = not torch.equal(e["search"], p["search"])
        assert torch.equal(e["template"], p["template"].flip(-1) if fz else p["template"])
        assert torch.equal(e["search"], p["search"].flip(-1) if fx else p["search"])
        kinds.add((fz, fx))
    assert {(True, False), (False, True)} <= kinds  # the two crops are not flipped together


def test_brightness_is_drawn_per_crop_and_leaves_geometry_alone():
    plain, jit = _pairs(), _pairs(brightness_jitter=0.2)
    differ = 0
    for i in range(len(plain)):
        p, j = plain[i], jit[i]
        assert torch.equal(p["search_box"], j["search_box"]) and torch.equal(p["frames"], j["frames"])
        ratios = []
        for key in ("template", "search"):
            a, b = _pixels(p[key]), _pixels(j[key])
            keep = (a > 5) & (b < 250)  # away from the clamp
            r = b[keep] / a[keep]
            assert float(r.max() - r.min()) < 1e-3
            ratios.append(float(r.mean()))
            assert 0.8 - 1e-4 <= ratios[-1] <= 1.2 + 1e-4
        differ += abs(ratios[0] - ratios[1]) > 1e-3
    assert differ > len(plain) // 2


def test_grayscale_prob_turns_both_crops_grey_together():
    ds = _pairs(30, grayscale_prob=0.5)
    grey = []
    for i in range(len(ds)):
        it = ds[i]
        g = [float((_pixels(it[k]).amax(0) - _pixels(it[k]).amin(0)).max()) < 1e-2 for k in ("template", "search")]
        assert g[0] == g[1]
        grey.append(g[0])
    assert 0 < sum(grey) < len(grey)


def test_pair_config_checks_and_validation_is_not_augmented(tmp_path):
    with pytest.raises(ValueError, match="flip_prob"):
        PairConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match="brightness_jitter"):
        PairConfig(brightness_jitter=-0.1)
    cfg = PairConfig(brightness_jitter=0.2, three_augment=True, flip_prob=0.5)
    assert cfg.augments and not cfg.without_augmentation().augments
    assert not PairConfig().augments

    from trackers.train.recipes.box import BoxConfig, BoxRecipe
    from trackers.train.recipes.lora import LoRAConfig

    box = BoxConfig(output_dir=str(tmp_path), preset="tiny", synthetic_clips=2, synthetic=SYN, train_pairs=4,
                    val_pairs=2, max_gap=3, progress=False, device="cpu")
    assert (box.brightness_jitter, box.grayscale_prob, box.flip_prob, box.flip_each) == (0.2, 0.05, 0.5, False)
    recipe = BoxRecipe(box)
    recipe.build_tracker()
    train, val = recipe.build_datasets()
    assert train.config.brightness_jitter == 0.2 and train.config.flip_prob == 0.5
    assert not val.config.augments
    lora = LoRAConfig(output_dir=str(tmp_path), synthetic_clips=2)
    assert lora.three_augment and lora.flip_each and lora.saturation_jitter == 0.4
    with pytest.raises(ValueError, match="grayscale_prob"):
        BoxConfig(output_dir=str(tmp_path), synthetic_clips=2, grayscale_prob=2.0)
