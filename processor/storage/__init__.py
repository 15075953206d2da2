"""Storage: the write-ahead log (``wal``, owned through ``receiver_lock``), Parquet day partitions (``parquet``),
atomic day rewrites for compaction (``compaction``) and re-pricing (``reprice``), and record identity at ingest
(``dedupe``)."""
