"""Solutions to the notebooks' exercises, one module per notebook (checked by tests)."""
