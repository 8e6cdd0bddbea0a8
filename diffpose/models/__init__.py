"""Pose models: backbones, the STRL, the LMSFI decoder, DiffPose and the single-frame baseline."""
