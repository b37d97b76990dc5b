"""After scoring: query the catalog (DuckDB over Parquet) and look at candidates (galleries)."""
