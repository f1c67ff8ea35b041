"""Torch-side training helpers. torch is imported inside functions, never at module load."""
