"""``python -m snowtrain.operator``: run the kopf operator with settings from the environment.

Settings: see :class:`snowtrain.operator.settings.OperatorSettings` (``SNOWTRAIN_*`` env).
"""

from __future__ import annotations

import logging
import sys

import kopf


def main() -> int:
    from . import handlers  # registers the handlers with kopf's default registry

    settings = handlers.SETTINGS
    if settings.log_format == "json":
        kopf.configure(log_format=kopf.LogFormat.JSON)
    else:
        kopf.configure(log_format=kopf.LogFormat.FULL)
    logging.getLogger("snowtrain").setLevel(logging.INFO)
    # kopf logs every handler run per object at INFO (timers included): keep warnings only.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if settings.webhook_enabled:
        from . import webhook  # noqa: F401  (registers the validating handlers)
    namespaces = settings.namespace_list
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=settings.standalone or None,
        priority=settings.peering_priority,
        peering_name=settings.peering_name,
        liveness_endpoint=settings.liveness_endpoint or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
