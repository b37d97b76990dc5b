"""Survey-scale scoring: Ray Data streams shards through ensemble actors into Parquet."""
