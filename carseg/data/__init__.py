"""Data: Carvana layout, decoding, synthetic set, transforms and the DataModule."""
