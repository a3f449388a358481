"""Data sources, validation, splitting and tokenisation."""
