"""Storage and file formats: URLs to filesystems, Parquet and FITS shards, .npy imports."""
