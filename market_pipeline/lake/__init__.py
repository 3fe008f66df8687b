"""The local lake: hive-partitioned Parquet, atomic writes, quarantine, DuckDB catalog."""
