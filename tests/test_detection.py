"""Detection: boxes in the data layer, the COCO metric's known answers, the FCOS-style probe, and a
suite whose detections pycocotools re-scores from the run folders' files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from mimbench.data import DeviceImages, Normalizer
from mimbench.probing import ProbeContext, RawPixels
from mimbench_plugins import coco_metric
from mimbench_plugins.detection_datasets import detection_folder
from mimbench_plugins.detection_probe import DetectionProbe, fcos_targets
from mimbench_plugins.mosaic import fashion_mosaic

from helpers import run_cli, write_suite_file

CPU = torch.device("cpu")


# -- the metric -------------------------------------------------------------------------------------------

def _truth() -> torch.Tensor:
    """Three 64-px images: two objects, one, none (class, x0, y0, x1, y1)."""
    return torch.tensor([[[0, 4, 4, 24, 24], [1, 30, 10, 60, 40]],
                         [[1, 10, 10, 30, 50], [-1, -1, -1, -1, -1]],
                         [[-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]]], dtype=torch.float32)


def _detections(boxes: torch.Tensor, shift: float = 0.0) -> list:
    """The true boxes shifted right by ``shift`` px, as detections of their own class, scored 0.9 on
    the first image, 0.8 on the second..."""
    found = []
    for i, rows in enumerate(boxes):
        real = rows[rows[:, 0] >= 0]
        found.append((real[:, 1:] + torch.tensor([shift, 0.0, shift, 0.0]), torch.full((len(real),), 0.9 - 0.1 * i),
                      real[:, 0].long()))
    return found


def test_perfect_detections_score_one_and_shifted_ones_follow_the_iou_thresholds():
    truth = coco_metric.ground_truth(_truth(), 64, ["a", "b"])
    perfect = coco_metric.average_precision(truth, coco_metric.results(_detections(_truth())))
    assert perfect == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0), "map75": pytest.approx(1.0)}
    # 4 px to the right: the 20-px box (class 0) at IoU 320/480 = 0.667, the 30-px box (class 1, image 0)
    # 780/1020 = 0.765, the 20x40 box (class 1, image 1) 640/960 = 0.667. Of COCO's thresholds .50:.05:.95:
    # class 0 is found at the first 4 (AP 1) and missed after (AP 0); class 1 has both found at the first
    # 4, only its better-scored box at .70 and .75 (precision 1 up to recall 0.5: 51 of the 101 recall
    # points), none after.
    scores = coco_metric.average_precision(truth, coco_metric.results(_detections(_truth(), 4.0)))
    class_0, class_1 = 4 / 10, (4 + 2 * 51 / 101) / 10
    assert scores["map"] == pytest.approx((class_0 + class_1) / 2, abs=1e-9)
    assert scores["map50"] == pytest.approx(1.0) and scores["map75"] == pytest.approx((0 + 51 / 101) / 2)
    wrong_class = [(b, s, 1 - c) for b, s, c in _detections(_truth())]
    assert coco_metric.average_precision(truth, coco_metric.results(wrong_class))["map50"] == pytest.approx(0.0)
    assert coco_metric.average_precision(truth, [])["map"] == 0.0


def test_the_documents_are_what_pycocotools_reads_from_files(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = coco_metric.ground_truth(_truth(), 64, ["a", "b"])
    found = coco_metric.results(_detections(_truth(), 3.0))
    ours = coco_metric.average_precision(truth, found)
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    (tmp_path / "dt.json").write_text(json.dumps(found))
    assert "segmentation" not in found[0] and "ignore" not in truth["annotations"][0]  # left as given
    coco = COCO(str(tmp_path / "gt.json"))
    evaluation = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "bbox")
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert ours["map"] == pytest.approx(evaluation.stats[0], abs=1e-9) and ours["map50"] == evaluation.stats[1]


# -- boxes in the data layer -----------------------------------------------------------------------------------

def test_fashion_mosaic_boxes_are_the_tight_boxes_of_visible_ink_and_nothing_else_changed():
    data = fashion_mosaic("test", num_images=50)
    digest = hashlib.sha256(data.images.numpy().tobytes() + data.masks.numpy().tobytes()
                            + data.labels.numpy().tobytes()).hexdigest()
    assert digest == "be397ceba8d1bac3c179ab22610138f69be4705a1b07aaf16b45cd97200029ed"  # as before boxes existed
    assert data.boxes.shape == (50, 4, 5) and data.box_classes == 10
    for mask, rows in zip(data.masks, data.boxes):
        real = rows[rows[:, 0] >= 0]
        assert 1 <= len(real) <= 4
        covered = torch.zeros_like(mask, dtype=torch.bool)
        for cls, x0, y0, x1, y1 in real.long().tolist():
            inside = mask[y0:y1, x0:x1] == cls + 1
            # tight: the item's class is on each of the box's four edges
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y0:y1, x0:x1] |= inside
        assert torch.equal(covered, mask > 0)  # every inked pixel is in a box of its class


def test_boxes_are_scaled_with_the_images():
    from mimbench.data import to_device_images

    held = to_device_images(fashion_mosaic("test", num_images=5), 28, CPU)
    original = fashion_mosaic("test", num_images=5).boxes
    real = original[..., 0] >= 0
    assert torch.allclose(held.boxes[real][:, 1:], original[real][:, 1:] / 2)
    assert torch.equal(held.boxes[~real], original[~real]) and torch.equal(held.subset(torch.tensor([3])).boxes,
                                                                           held.boxes[3:4])


def _coco_folder(root: Path, split: str, annotations: list | None = None) -> None:
    from PIL import Image

    (root / split / "images").mkdir(parents=True)
    Image.new("RGB", (40, 20), (200, 10, 10)).save(root / split / "images" / "a.png")
    Image.new("RGB", (40, 20), (10, 10, 200)).save(root / split / "images" / "b.png")
    document = {"images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 20},
                           {"id": 9, "file_name": "b.png", "width": 40, "height": 20}],
                "annotations": annotations if annotations is not None else [
                    {"id": 1, "image_id": 7, "category_id": 3, "bbox": [4, 2, 8, 6]},
                    {"id": 2, "image_id": 7, "category_id": 5, "bbox": [20, 0, 20, 20]}],
                "categories": [{"id": 5, "name": "cat"}, {"id": 3, "name": "dog"}]}
    (root / split / "annotations.json").write_text(json.dumps(document))


def test_a_detection_folder_reads_coco_annotations_and_scales_the_boxes(tmp_path):
    _coco_folder(tmp_path, "train")
    data = detection_folder("train", str(tmp_path), image_size=16)
    assert data.images.shape == (2, 3, 16, 16) and data.box_classes == 2 and data.num_classes == 3
    # categories 3 -> class 0, 5 -> class 1; x scaled by 16/40, y by 16/20
    assert torch.allclose(data.boxes[0], torch.tensor([[0, 1.6, 1.6, 4.8, 6.4], [1, 8.0, 0.0, 16.0, 16.0]]))
    assert data.boxes[1, :, 0].tolist() == [-1, -1]
    assert data.labels.tolist() == [1, 2]  # the largest box's class; b.png has none: "no object"


@pytest.mark.parametrize("annotation, message", [
    ({"image_id": 8, "category_id": 3, "bbox": [0, 0, 1, 1]}, "image_id 8 is not the id of any of 'images'"),
    ({"image_id": 7, "category_id": 4, "bbox": [0, 0, 1, 1]}, "category_id 4 is not the id of any of 'categories'"),
    ({"image_id": 7, "category_id": 3, "bbox": [0, 0, -1, 1]}, "bbox must be [x, y, width, height]"),
])
def test_a_bad_annotation_is_one_line_naming_the_file_and_entry(tmp_path, annotation, message):
    from mimbench.cli import cli

    _coco_folder(tmp_path, "train", [annotation])
    _coco_folder(tmp_path, "test")
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--set", f"dataset={{name: detection-folder, params: "
                                      f"{{root: {tmp_path}}}}}", "--set", "image_size=16",
                                      "--set", "eval.probes=[detection]"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert str(tmp_path / "train" / "annotations.json") in lines[0] and "annotations[0]" in lines[0]
    assert message in lines[0] and "Traceback" not in result.output


def test_a_detection_probe_on_a_dataset_without_boxes_exits_2_before_training(tmp_path):
    text = SUITE.replace("{name: fashion-mosaic, params: {num_images: 120}}", "fashion-mnist-mini")
    result = run_cli("run", str(write_suite_file(tmp_path, text)), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "probe 'detection' is a detection probe" in result.output and "it has no boxes" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out" / "det" / "runs").exists()


# -- the probe ---------------------------------------------------------------------------------------------------

def _squares(count: int, generator: torch.Generator) -> DeviceImages:
    """32-px images with one 12-px square each: class 0 solid, class 1 hollow, at a random place."""
    images = torch.zeros(count, 1, 32, 32, dtype=torch.uint8)
    corners = torch.randint(0, 21, (count, 2), generator=generator)
    classes = torch.arange(count) % 2
    for image, (x, y), cls in zip(images, corners.tolist(), classes.tolist()):
        image[0, y:y + 12, x:x + 12] = 255
        if cls:
            image[0, y + 3:y + 9, x + 3:x + 9] = 0
    boxes = torch.cat([classes[:, None].float(), corners.float(), corners.float() + 12], dim=1)[:, None]
    return DeviceImages(images, classes, 2, None, None, boxes, 2)


def test_the_probe_finds_squares_in_raw_pixels_and_nothing_in_constant_features():
    torch.manual_seed(0)  # the head's initial weights (a run's probes start from the run's seed)
    g = torch.Generator().manual_seed(0)
    train, test = _squares(400, g), _squares(100, g)
    context = ProbeContext(RawPixels(1, 32), train, test, Normalizer.measure(train), CPU, seed=0, batch_size=64)
    scores = DetectionProbe(steps=600)(context)
    assert scores["det_map50"] > 0.85 and scores["det_map"] > 0.7, scores

    class Constant(torch.nn.Module):
        out_dim, stride = 4, 4

        def forward(self, images, mask=None):
            return torch.ones(images.shape[0], 4, 8, 8)

    blind = ProbeContext(Constant(), train, test, Normalizer.measure(train), CPU, seed=0, batch_size=64)
    assert DetectionProbe(steps=100)(blind)["det_map50"] < 0.2


def test_fcos_targets_give_each_object_the_cells_near_its_centre_the_smallest_first():
    boxes = torch.tensor([[[0, 0, 0, 16, 16], [1, 4, 4, 12, 12], [-1, -1, -1, -1, -1]]])
    targets = fcos_targets(boxes, (4, 4), 16, radius=1.0)  # 4-px cells; both centres at (8, 8)
    # cells whose centre is within 4 px of (8, 8) on both axes: centres 6 and 10 -> the middle 2 x 2
    assert targets.classes[0].tolist() == [[-1, -1, -1, -1], [-1, 1, 1, -1], [-1, 1, 1, -1], [-1, -1, -1, -1]]
    assert targets.boxes[0, 1, 1].tolist() == [4, 4, 12, 12]


# -- a suite -----------------------------------------------------------------------------------------------------

SUITE = """
name: det
dataset: {name: fashion-mosaic, params: {num_images: 120}}
image_size: 32
seeds: [0]
train: {epochs: 1, batch_size: 32, warmup_epochs: 0.2}
eval: {probes: [{name: detection, params: {steps: 40}}], baselines: [random-init], batch_size: 64}
grid:
  encoder: [{name: vit, params: {patch_size: 4, dim: 16, depth: 2, heads: 2}}]
  decoder: [linear]
  masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}, {name: pixel, params: {ratio: 0.5}}]
  loss: [l1]
"""


def test_every_run_with_det_map_writes_detections_that_cocoeval_rescores(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    suite = tmp_path / "out" / "det"
    table = pd.read_csv(suite / "summary.csv")
    assert len(table) == 3 and (table["status"] == "done").all() and table["det_map"].notna().all()
    for row in table.itertuples():
        folder = suite / "runs" / row.run_id
        coco = COCO(str(folder / "detections_gt.json"))
        found = json.loads((folder / "detections.json").read_text())
        evaluation = COCOeval(coco, coco.loadRes(str(folder / "detections.json")) if found else COCO(), "bbox")
        if found:
            evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
            assert evaluation.stats[0] == pytest.approx(row.det_map, abs=1e-3)
            assert evaluation.stats[1] == pytest.approx(row.det_map50, abs=1e-3)
        else:
            assert row.det_map == 0.0
        assert (folder / "detections.png").is_file()
    # the trained runs also carry the classical reconstructions on their own masks
    trained = table[table["baseline"].isna()]
    assert trained["inpaint_psnr"].notna().all() and trained["recon_ssim"].between(-1, 1).all()
    assert (trained["inpaint_gain_psnr"] - (trained["recon_psnr"] - trained["inpaint_psnr"])).abs().max() < 1e-9
    assert "det. mAP" in (suite / "report.md").read_text()


def test_the_probe_reads_any_block_and_every_block_with_layer_all():
    from mimbench.probing import dense_grid
    from mimbench_plugins.restoration_probe import RestorationProbe
    from mimbench_plugins.vit import ViTEncoder

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    train, test = _squares(40, g), _squares(20, g)
    encoder = ViTEncoder(1, 32, patch_size=4, dim=16, depth=2, heads=2).eval()
    context = ProbeContext(encoder, train, test, Normalizer.measure(train), CPU, seed=0, batch_size=16)
    every = DetectionProbe(layer="all", steps=5)(context)
    assert {"det_map", "det_map@0", "det_map@1", "det_map50@1", "det_train_loss@0"} <= set(every)
    one = DetectionProbe(layer=0, steps=5)(context)
    assert one["det_map"] == one["det_map@0"] and "det_map@1" not in one
    restored, output = RestorationProbe(layer=0)(context), RestorationProbe()(context)
    assert restored["sr_psnr"] == restored["sr_psnr@0"] and restored["sr_psnr"] != output["sr_psnr"]
    with torch.no_grad():  # block 0 is not the output: the probe read the block it was given
        assert not torch.allclose(dense_grid(encoder, torch.zeros(1, 1, 32, 32), 0), encoder(torch.zeros(1, 1, 32, 32)))
