"""Inference: person boxes -> batched sampling -> image-space keypoints -> PoseTrack18 files and
video overlays."""
