"""Dense evaluation: the mosaic dataset, segmentation scores against their definitions, the dense
probes on oracle and constant features, and suites that use them."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from click.testing import CliRunner
import torch
import torch.nn.functional as F
from torch import nn

from mimbench import metrics
from mimbench.data import DeviceImages, Normalizer
from mimbench.probing import ProbeContext, RawPixels
from mimbench_plugins.mosaic import fashion_mosaic
from mimbench_plugins.seg_probes import SegKNNProbe, SegLinearProbe

from helpers import run_cli, write_suite_file

CPU = torch.device("cpu")


# -- scores -----------------------------------------------------------------------------------------

def test_miou_by_hand_with_an_ignored_pixel_and_an_absent_class():
    # 3 classes; class 2 is in neither the truth nor the prediction: no IoU, not in the mean.
    target = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 2]])  # the ignored pixel's prediction does not count
    confusion = metrics.confusion_matrix(pred, target, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    scores = metrics.segmentation_scores(confusion)
    # IoU(0) = 1 / (1 + 0 + 1) = 0.5; IoU(1) = 2 / (2 + 1 + 0) = 2/3
    assert scores["miou"] == pytest.approx((0.5 + 2 / 3) / 2) and scores["classes_scored"] == 2
    assert scores["pixel_acc"] == pytest.approx(3 / 4)
    # a class predicted but absent from the truth scores IoU 0 and counts
    scores = metrics.segmentation_scores(metrics.confusion_matrix(torch.tensor([2, 1]), torch.tensor([0, 1]), 3))
    assert scores["miou"] == pytest.approx((0 + 1 + 0) / 3) and scores["classes_scored"] == 3


# -- the mosaic dataset ------------------------------------------------------------------------------

def digests(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images}


def test_mosaic_canvases_are_labelled_where_the_ink_is_and_deterministic():
    data = fashion_mosaic("test", image_size=56, num_images=50)
    assert data.images.shape == (50, 1, 56, 56) and data.masks.shape == (50, 56, 56) and data.mask_classes == 11
    assert ((data.images[:, 0] > 40) == (data.masks > 0)).all()  # ink <=> an item's class, else background
    assert torch.equal(data.masks, fashion_mosaic("test", image_size=56, num_images=50).masks)
    assert not torch.equal(data.masks, fashion_mosaic("test", image_size=56, num_images=50, seed=1).masks)
    counts = F.one_hot(data.masks.long().flatten(1), 11)[:, :, 1:].sum(1)
    assert torch.equal(data.labels, counts.argmax(1))  # the image's label: its largest item's class


def test_mosaic_train_and_test_canvases_share_no_source_image():
    train, test = (fashion_mosaic(split, image_size=56, num_images=300) for split in ("train", "test"))
    assert digests(train.item_images).isdisjoint(digests(test.item_images))
    assert len(digests(test.item_images)) > 100  # many distinct items, not one repeated


# -- the probes on oracle and constant features ------------------------------------------------------

class LabelMapEncoder(nn.Module):
    """An 'encoder' whose feature grid is the one-hot label map itself (stride 1): images hold the
    class as pixel value 20 * class (normalised with mean 0, std 1/255)."""

    out_dim, stride = 4, 1

    def forward(self, images, mask=None):
        classes = (images / 20).round().long().clamp(0, 3)[:, 0]
        return F.one_hot(classes, 4).movedim(-1, 1).float()


class ConstantEncoder(LabelMapEncoder):
    def forward(self, images, mask=None):
        return torch.ones(images.shape[0], 4, images.shape[2], images.shape[3])


def blob_split(count: int, seed: int) -> DeviceImages:
    """Images of 16 px with rectangles of classes 1..3 on background 0 (class 3 is rare), and their masks."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(count, 16, 16, dtype=torch.uint8)
    for i in range(count):
        for label in (1, 2, 3):
            top, left = torch.randint(0, 12, (2,), generator=generator).tolist()
            side = 2 if label == 3 else 5
            masks[i, top:top + side, left:left + side] = label
    masks[:, 0, 0] = 255  # one unlabelled pixel per image
    images = (masks.clamp_max(3) * 20).unsqueeze(1)
    return DeviceImages(images, torch.zeros(count, dtype=torch.long), 1, masks, 4)


def context(encoder: nn.Module) -> ProbeContext:
    return ProbeContext(encoder, blob_split(40, 0), blob_split(20, 1), Normalizer(torch.zeros(1), torch.ones(1) / 255),
                        CPU, seed=0, batch_size=16)


@pytest.mark.parametrize("probe, key", [(SegLinearProbe(steps=300, lr=0.05), "seg_miou"),
                                        (SegKNNProbe(k=5), "seg_knn_miou")])
def test_oracle_features_score_miou_one(probe, key):
    assert probe(context(LabelMapEncoder()))[key] == pytest.approx(1.0)


def test_constant_features_score_what_predicting_the_majority_class_scores():
    test = blob_split(20, 1)
    majority = torch.zeros_like(test.masks)  # background is the largest class
    expected = metrics.segmentation_scores(metrics.confusion_matrix(majority, test.masks, 4))
    result = SegLinearProbe(steps=300, lr=0.05)(context(ConstantEncoder()))
    assert result["seg_miou"] == pytest.approx(expected["miou"]) and result["seg_pixel_acc"] == pytest.approx(
        expected["pixel_acc"])
    assert result["seg_train_loss"] > 0.5  # nothing to learn from: the probe's loss says so


def test_the_pixels_baseline_is_a_grid_of_raw_patches():
    grid = RawPixels(1, 16).dense_grid(torch.arange(256.0).view(1, 1, 16, 16))
    assert grid.shape == (1, 16, 4, 4) and grid[0, :, 0, 0].tolist() == [0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35,
                                                                         48, 49, 50, 51]


# -- suites --------------------------------------------------------------------------------------------

DENSE_SUITE = """
name: dense
dataset: {name: fashion-mosaic, params: {num_images: 160}}
image_size: 32
seeds: [0]
train: {epochs: 1, batch_size: 32, warmup_epochs: 0.2}
eval: {probes: [{name: seg_linear, params: {steps: 50}}, seg_knn, linear], batch_size: 64}
grid:
  encoder: [{name: vit, params: {patch_size: 4, dim: 16, depth: 2, heads: 2}}, {name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}]
  loss: [l1]
"""


def test_a_dense_suite_scores_every_run_and_baseline(tmp_path):
    result = run_cli("run", str(write_suite_file(tmp_path, DENSE_SUITE)), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "dense" / "summary.csv")
    assert len(table) == 5 and (table["status"] == "done").all()  # 2 runs, 2 random-init, 1 pixels
    assert table["seg_miou"].between(0, 1).all() and table["seg_knn_miou"].between(0, 1).all()
    assert table["seg_train_loss"].gt(0).all()
    report = (tmp_path / "out" / "dense" / "report.md").read_text()
    assert "seg. linear mIoU" in report


def test_a_dense_probe_on_a_dataset_without_masks_exits_2_before_training(tmp_path):
    text = DENSE_SUITE.replace("{name: fashion-mosaic, params: {num_images: 160}}", "fashion-mnist-mini")
    result = run_cli("run", str(write_suite_file(tmp_path, text)), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "probe 'seg_linear' is a dense probe" in result.output and "no segmentation masks" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out" / "dense" / "runs").exists()


# -- datasets with real label maps ----------------------------------------------------------------------

def write_pair(images: "Path", masks: "Path", name: str, seed: int, mode: str = "RGB") -> torch.Tensor:
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (20, 30), generator=generator).to(torch.uint8)
    labels[:4, :6] = 255  # a boundary region (large enough to survive a nearest resize)
    pixels = torch.randint(0, 256, (20, 30, 3), generator=generator).to(torch.uint8).numpy()
    images.mkdir(parents=True, exist_ok=True), masks.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(images / f"{name}.{'jpg' if mode == 'jpg' else 'png'}")
    if mode == "P":  # a palette PNG, as VOC's: the pixel values are the palette indices
        label_map = Image.new("P", (30, 20))
        label_map.putpalette([v for i in range(256) for v in (i, i, i)])
        label_map.putdata(labels.flatten().tolist())
    else:
        label_map = Image.fromarray(labels.numpy())
    label_map.save(masks / f"{name}.png")
    return labels


def test_voc_reads_a_voc_tree_through_torchvision(tmp_path):
    from mimbench_plugins.seg_datasets import voc_segmentation

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        for i, name in enumerate(names):
            write_pair(voc / "JPEGImages", voc / "SegmentationClass", name, i, mode="jpg")
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    for i, name in enumerate(["a", "b"]):  # VOC's label maps are palette PNGs
        write_pair(tmp_path / "tmp", voc / "SegmentationClass", name, i, mode="P")
    train = voc_segmentation("train", image_size=10, root=str(tmp_path))
    test = voc_segmentation("test", image_size=10, root=str(tmp_path))
    assert train.images.shape == (2, 3, 10, 10) and test.images.shape == (1, 3, 10, 10) and train.mask_classes == 21
    assert set(train.masks.unique().tolist()) <= {0, 1, 2, 255} and train.masks[0, 0, 0] == 255
    with pytest.raises(FileNotFoundError, match="set 'download: true'"):
        voc_segmentation("train", root=str(tmp_path / "nothing"))


def test_a_segmentation_folder_pairs_images_with_label_maps_of_the_same_name(tmp_path):
    from mimbench_plugins.seg_datasets import segmentation_folder

    labels = write_pair(tmp_path / "train" / "images", tmp_path / "train" / "masks", "x", 0)
    data = segmentation_folder("train", str(tmp_path), classes=3, image_size=30, channels=1)
    assert data.images.shape == (1, 1, 30, 30)
    assert data.masks.shape == (1, 30, 30) and data.masks[0, 0, 0] == 255
    assert set(data.masks.unique().tolist()) == {0, 1, 2, 255}
    write_pair(tmp_path / "tmp", tmp_path / "tmp2", "y", 1)
    (tmp_path / "tmp" / "y.png").rename(tmp_path / "train" / "images" / "y.png")
    with pytest.raises(FileNotFoundError, match="y.png not found: every image needs a label map"):
        segmentation_folder("train", str(tmp_path), classes=3)
    with pytest.raises(ValueError, match="label 2 is not a class of 0..1"):
        (tmp_path / "train" / "images" / "y.png").unlink()
        segmentation_folder("train", str(tmp_path), classes=2)



def test_a_garbage_image_in_a_segmentation_folder_is_one_line_naming_it(tmp_path):
    """Not PIL's bare ``UnidentifiedImageError``: the file and the reason, exit 2."""
    from mimbench.cli import cli

    write_pair(tmp_path / "train" / "images", tmp_path / "train" / "masks", "x", 0)
    write_pair(tmp_path / "test" / "images", tmp_path / "test" / "masks", "y", 1)
    (tmp_path / "test" / "images" / "y.png").write_bytes(b"not a png at all")
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--set", f"dataset={{name: segmentation-folder, params: "
                                      f"{{root: {tmp_path}, classes: 3}}}}", "--set", "image_size=16",
                                      "--set", "eval.probes=[seg_linear]"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert str(tmp_path / "test" / "images" / "y.png") in lines[0] and "cannot read the image" in lines[0]
    assert "UnidentifiedImageError" in lines[0] and "Traceback" not in result.output

def test_dense_probes_score_every_block_with_layer_all():
    from mimbench_plugins.vit import ViTEncoder

    torch.manual_seed(0)
    encoder = ViTEncoder(1, 16, patch_size=4, dim=16, depth=2, heads=2)
    result = SegKNNProbe(layer="all")(context(encoder))
    assert {"seg_knn_miou", "seg_knn_miou@0", "seg_knn_miou@1", "seg_knn_pixel_acc@1"} <= set(result)
    one_block = SegLinearProbe(layer=1, steps=5)(context(encoder))
    assert one_block.keys() == {"seg_miou", "seg_pixel_acc", "seg_train_loss", "seg_miou@1", "seg_pixel_acc@1",
                                "seg_train_loss@1"}
    assert one_block["seg_miou"] == one_block["seg_miou@1"]


def test_a_dense_split_whose_every_pixel_is_ignored_is_refused_before_training(tmp_path):
    """Not a silent mIoU of nan: the split, why, and what to check, exit 2."""
    from PIL import Image

    from mimbench.cli import cli

    write_pair(tmp_path / "train" / "images", tmp_path / "train" / "masks", "x", 0)
    write_pair(tmp_path / "test" / "images", tmp_path / "test" / "masks", "y", 1)
    Image.fromarray(torch.full((20, 30), 7, dtype=torch.uint8).numpy()).save(tmp_path / "test" / "masks" / "y.png")
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--set", f"dataset={{name: segmentation-folder, params: "
                                      f"{{root: {tmp_path}, classes: 3, ignore_index: 7}}}}", "--set", "image_size=16",
                                      "--set", "eval.probes=[seg_linear]", "--set", "train.batch_size=1"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "probe 'seg_linear': the test split of dataset 'segmentation-folder' has no labelled pixel" in lines[0]
    assert "mIoU would be undefined" in lines[0]
