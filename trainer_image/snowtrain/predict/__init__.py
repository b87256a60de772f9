"""The batch predictor: a trained model over a Snowflake table, answers into a Snowflake table.

``python -m snowtrain.predict --config FILE`` runs one ``PredictorConfig``
(``snowtrain.api.batch``): ``source.py`` reads the rows in key order, ``infer.py`` runs the
model over them in length-sorted batches, ``sink.py`` commits each chunk of answers to a
staging table (parquet, PUT, COPY) and writes the output table once at the end; ``run.py``
wires them and speaks the trainer's protocol (events on stdout, a termination message, exit
codes), so the operator and local mode read a prediction pod as they read a training pod.
"""
