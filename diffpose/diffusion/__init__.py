"""Diffusion on keypoint heatmaps: noise schedules, the DDIM sampler and ensembles."""
