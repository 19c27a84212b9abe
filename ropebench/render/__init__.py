"""Rendering: the only place a number is rounded (console output, tables, comparisons, plots)."""
