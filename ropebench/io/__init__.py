"""Everything that touches files: reading parquet, validating inputs, writing results and
submissions atomically, converters. The math (engines, measures) never imports from here."""
