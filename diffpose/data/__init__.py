"""PoseTrack formats, the keypoint table, the synthetic benchmark, frames, training clips, heatmaps."""
