"""The trainer's data layer: Snowflake in, disk-backed token tensors out.

``credentials`` reads secrets (env vars or a mounted Secret), ``connection`` logs in with
timeouts and retries, ``source`` streams the rows as Arrow batches after ``profile`` has
checked them (``columns`` maps roles to SQL and back, ``split`` holds the hashed validation
split and the data fingerprint), ``tokenize``/``store`` turn those batches into
memory-mapped token datasets, and ``stage`` uploads an exported model to a Snowflake stage.
Memory stays bounded by one batch.
"""
