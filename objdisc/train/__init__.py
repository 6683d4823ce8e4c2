"""The training engine: one plain loop for every model (README, "Training")."""
