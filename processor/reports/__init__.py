"""Reports over the Parquet dataset: the query model (``query``), its SQL (``sql``), the dataset reader
(``dataset``), the report itself (``report``), budgets, margins (with the revenue file), spikes, and output formats."""
