"""Files between stages: Parquet tables and their metadata (`parquet`), partitioned datasets
(`partitions`), and completion markers with per-file digests (`integrity`); file locks that die
with their holder (`locks`) and the processes that records name (`processes`)."""
