"""The typed run record: metrics.json's layout to and from its parts, and the column lists it declares."""

from __future__ import annotations

import json

from mimbench import columns
from mimbench.record import Probes, Reconstruction, RunRecord, Training, field_annotations

TRAINING = Training(train_seconds=3.5, images_per_second=120.0, epochs_completed=2, final_loss=0.31, train_steps=8,
                    epochs=2.0, flops_per_image=1.5e6, train_flops=1.2e9, resumed_from_epoch=1)
RECONSTRUCTION = Reconstruction(recon_mse=None, recon_psnr=None, mask_ratio_actual=0.6, mask_avgdist_px=2.5,
                                recon_uses_target_stats=False, target_loss=0.7)


def test_a_record_is_written_flat_in_stage_order_and_read_back_whole():
    record = RunRecord("done", TRAINING, RECONSTRUCTION, Probes({"linear_acc": 0.8, "linear_acc@0": 0.7}, 60, 6, 1.25),
                       peak_memory_mb=512.0, wall_seconds=9.0)
    flat = record.to_json()
    assert list(flat)[:8] == ["status", "train_seconds", "images_per_second", "epochs_completed", "final_loss",
                              "train_steps", "epochs", "flops_per_image"]
    # an optional field that is None is left out; a required one that is None (no pixel-space PSNR) is kept
    assert "compile_seconds" not in flat and "ref_mse" not in flat and flat["recon_psnr"] is None
    assert list(flat)[-5:] == ["probe_train_images", "probe_labels_per_class", "probe_seconds", "peak_memory_mb",
                               "wall_seconds"]
    assert RunRecord.from_json(json.loads(json.dumps(flat))) == record


def test_a_baseline_record_has_probes_only_and_probes_added_later_merge():
    baseline = RunRecord.from_json({"status": "done", "knn_acc": 0.5, "probe_train_images": 60,
                                    "probe_labels_per_class": 6, "probe_seconds": 1.0, "wall_seconds": 2.0})
    assert baseline.training is None and baseline.reconstruction is None and baseline.probes.columns == {"knn_acc": 0.5}
    merged = baseline.probes.merged(Probes({"linear_acc": 0.6}, 60, 6, 0.5))
    assert merged.columns == {"knn_acc": 0.5, "linear_acc": 0.6} and merged.probe_seconds == 1.5


def test_the_core_columns_are_fields_of_the_record_and_their_types_its_annotations():
    fields = field_annotations()
    assert set(columns.CORE_COLUMNS) <= set(fields)
    assert set(columns.TIMING_COLUMNS) - set(fields) == {"error"}  # a failed run's, not a record's
    assert {name for name, kind in columns.FIXED_TYPES.items() if kind == "int"} == {
        "seed", *(name for name, annotation in fields.items() if annotation.startswith("int"))}
