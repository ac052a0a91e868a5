"""Run records (``records/``), figure and table generation (``plots/``) and their outputs."""
