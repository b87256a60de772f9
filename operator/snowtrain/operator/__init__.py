"""The snowtrain operator (kopf): FineTuneJob/PretrainJob -> ConfigMap, one batch Job per
attempt, serving Deployment + Service; status derived from what is observed.

Pure core, thin shell:

- :mod:`.settings`  -- ``SNOWTRAIN_*`` environment -> :class:`OperatorSettings`
- :mod:`.children`  -- job + settings -> child manifests (pure)
- :mod:`.status`    -- observed Job/pods/log lines/Deployment -> status + next step (pure)
- :mod:`.reconcile` -- observe, decide, apply (the only module with side effects)
- :mod:`.handlers`  -- kopf wiring: which events trigger a reconcile
- :mod:`.webhook`   -- validating admission webhook
- ``python -m snowtrain.operator`` runs it.
"""
