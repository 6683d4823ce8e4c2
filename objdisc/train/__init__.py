"""The training engine: one plain loop for every model (design.md section 6)."""
