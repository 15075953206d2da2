"""Storage: the write-ahead log, Parquet partitions, compaction, re-pricing and the identity of a record."""
