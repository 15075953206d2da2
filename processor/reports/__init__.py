"""Reports: the query model and its SQL over the Parquet dataset, budgets, margins, spikes and output formats."""
