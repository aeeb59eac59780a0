"""`uwm-upgrade run`: configure logging, metrics and kopf from the operator's settings, then run the handlers.

The settings go to kopf as its memo: every handler gets them (and the startup handler builds the engine's
`Runtime` from them), so nothing is passed through environment variables.

kopf always runs standalone (no KopfPeering): its peering freezes every operator of the same priority,
which is not leader election. Replicas elect their leader by a Lease instead (`engine/leader.py`), unless
`--standalone` says this process is the only one.
"""

from __future__ import annotations

import logging

from .settings import Settings


def run_operator(settings: Settings) -> int:
    import kopf

    from .engine import metrics

    kopf.configure(verbose=settings.verbose, log_format=kopf.LogFormat[settings.log_format.name], log_prefix=True)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    log = logging.getLogger("uwm_upgrade")
    if settings.server_policy.restricted and not settings.server_policy.allow_insecure_http:
        log.info("%s", settings.server_policy.describe())
    else:
        log.warning("%s%s", settings.server_policy.describe(), "" if settings.server_policy.restricted else
                    ": any plan may point the operator, and its agent token, at any address it can reach;"
                    " restrict it with --allow-server-host / --allow-server-cidr")
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    from . import handlers  # registers the handlers

    del handlers
    kopf.run(
        standalone=True,  # kopf's peering is not used: the Lease election is (engine/leader.py)
        clusterwide=settings.cluster_wide,
        namespaces=list(settings.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None,
        memo=kopf.Memo(settings=settings),
    )
    return 0
