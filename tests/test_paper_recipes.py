"""The ImageNet / Tiny-ImageNet recipe pieces (per-image resized crops, CutMix, KL × T²), the keys they leave
alone, and the per-dataset notebook settings the paper profile is written in."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dire.data.augment import cutmix, random_resized_crops, resample_boxes
from dire.experiments.config import dataset_params
from dire.nets.teacher import teacher_config
from dire.nets.train import STUDENT_RECIPES, TEACHER_RECIPES, get_recipe, recipe_key, soft_label_loss


def test_resample_boxes_is_crop_then_bilinear_resize():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    # pixel-aligned boxes: rows 4..11, cols 2..9 of image 0 and the left half of image 1
    boxes = torch.tensor([[6 / 16, 8 / 16, 8 / 16, 8 / 16], [4 / 16, 8 / 16, 8 / 16, 1.0]], dtype=torch.float64)
    out = resample_boxes(x, boxes)
    ref0 = F.interpolate(x[:1, :, 4:12, 2:10], size=(16, 16), mode="bilinear", align_corners=False)
    ref1 = F.interpolate(x[1:, :, :, 0:8], size=(16, 16), mode="bilinear", align_corners=False)
    # the outermost output pixels sample half a pixel outside the box: the image there, the box's edge for
    # interpolate (which sees only the crop)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.cat([ref0, ref1])[..., 1:-1, 1:-1])


def test_full_scale_square_crops_are_the_identity():
    x = torch.randn(4, 3, 12, 12)
    out = random_resized_crops(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, x)


def test_resized_crops_differ_per_image_and_replay_from_the_generator():
    x = torch.randn(1, 3, 32, 32).repeat(6, 1, 1, 1)
    a = random_resized_crops(x, torch.Generator().manual_seed(3))
    b = random_resized_crops(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])  # one crop per image, not one per batch


def test_cutmix_pastes_one_box_of_the_paired_images():
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 16, 16).contiguous()
    out = cutmix(x, 1.0, torch.Generator().manual_seed(1))
    changed = out != x
    assert changed.any()
    mask = changed[0, 0]
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a rectangle
    for i in range(8):  # inside the box every pixel is one paired image's value, outside the image's own
        assert len(out[i, 0][mask].unique()) == 1
        assert (out[i, 0][~mask] == i).all()
    assert torch.equal(cutmix(x, 0.0, torch.Generator()), x)


def test_kd_t2_scales_the_kl_by_t_squared():
    s, t, y = torch.randn(5, 7), torch.randn(5, 7), torch.randint(0, 7, (5,))
    plain = get_recipe("cpu", student=True, temperature=20.0)
    scaled = get_recipe("cpu", student=True, temperature=20.0, kd_t2=True)
    torch.testing.assert_close(soft_label_loss(s, t, y, scaled), 400 * soft_label_loss(s, t, y, plain))


def test_added_recipe_fields_leave_earlier_keys_alone():
    for table in (TEACHER_RECIPES, STUDENT_RECIPES):
        for name in ("cifar", "cpu"):
            assert recipe_key(table[name]) == {
                f.name: getattr(table[name], f.name)
                for f in dataclasses.fields(table[name])
                if f.name not in ("resized_crop", "cutmix_alpha", "kd_t2")
            }
    key = teacher_config("tiny-imagenet", "resnet18", TEACHER_RECIPES["tiny-imagenet"], 0)
    assert key["recipe"]["resized_crop"] == [0.08, 1.0]  # set fields enter the key


def test_recipe_overrides_take_lists_and_check_the_crop():
    assert get_recipe("cpu", student=True, resized_crop=[0.25, 1.0]).resized_crop == (0.25, 1.0)
    with pytest.raises(ValueError, match="resized_crop"):
        get_recipe("cpu", student=True, resized_crop=[0.5, 0.2])


def test_dataset_params_merge_method_overrides_per_method():
    params = {
        "dataset": "digits",
        "iterations": 20,
        "lr": 0.25,
        "method_overrides": {"dwa": {"steps": 12}, "delt": {"round_iterations": 10}},
    }
    overrides = {"imagenet": {"lr": 0.1, "method_overrides": {"dwa": {"r_var": 2.0}, "cda": {"r_bn": 0.05}}}}
    p = dataset_params(params, "imagenet", overrides)
    assert (p["dataset"], p["lr"], p["iterations"]) == ("imagenet", 0.1, 20)
    assert p["method_overrides"] == {
        "dwa": {"steps": 12, "r_var": 2.0},
        "delt": {"round_iterations": 10},
        "cda": {"r_bn": 0.05},
    }
    assert dataset_params(params, "cifar10", overrides) == {**params, "dataset": "cifar10"}
    with pytest.raises(ValueError, match="not parameters of this notebook"):
        dataset_params(params, "imagenet", {"imagenet": {"learning_rate": 0.1}})
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_params(params, "imagenet", {"imagenett": {"lr": 0.1}})
