"""Training: the epoch loop (trainer), learning-rate schedules and torch.distributed helpers."""
