"""The SQL front door: Snowflake in, Kubernetes out, and the run history back into Snowflake.

``python -m snowtrain.bridge --config FILE`` (the chart's optional ``sqlFrontDoor``
component) polls a request table: each new row becomes a FineTuneJob built from an admin's
template (``template.py``), or is refused with the reason, and every row is answered once
(``requests.py``). It also keeps a ``RUNS`` table current with the phase, progress, metrics,
lineage and failure of every snowtrain resource in its namespace, and keeps the rows when the
resources are deleted (``runs.py``). ``loop.py`` runs both, one pass at a time.
"""
