"""Aggregation, statistics, figures, tables and the paper-style report (`fedicra report ...`)."""
