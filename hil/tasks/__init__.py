"""Tasks: data sets and their metrics (JSB Chorales, SHD)."""
