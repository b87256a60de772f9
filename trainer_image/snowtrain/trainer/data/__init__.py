"""The trainer's data layer: Snowflake in, disk-backed token tensors out.

``credentials`` reads secrets (env vars or a mounted Secret), ``connection`` logs in with
timeouts and retries, ``source`` validates and streams the rows as Arrow batches,
``tokenize``/``store`` turn those batches into memory-mapped token datasets, and ``stage``
uploads an exported model to a Snowflake stage. Memory stays bounded by one batch.
"""
