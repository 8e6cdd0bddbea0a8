"""Evaluation: the PoseTrack mAP (poseval's algorithm, exact and vectorised), COCO OKS AP, tables.

``evaluate_folders(gt_dir, pred_dir)`` returns the paper's columns and per-joint APs;
``diffpose.stages.evaluate.run`` adds COCO AP, per-sequence files and the metrics JSON writer.
"""

from diffpose.evaluation.posetrack_map import evaluate_folders

__all__ = ["evaluate_folders"]
