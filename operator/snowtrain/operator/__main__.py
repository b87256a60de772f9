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
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(debug=settings.debug, log_format=log_format)
    logging.getLogger("snowtrain").setLevel(logging.INFO)
    # kopf logs every handler run per object at INFO (timers included): keep warnings only.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if settings.webhook_enabled:
        from . import webhook  # noqa: F401  (registers the validating handlers)
    namespaces = settings.namespace_list
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        # No kopf peering: replicas elect a leader through a Lease (snowtrain.operator.leader)
        # and every replica keeps watching, so a standby takes over with a warm cache.
        standalone=True,
        liveness_endpoint=settings.liveness_endpoint or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
