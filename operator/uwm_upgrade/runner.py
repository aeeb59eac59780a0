"""`uwm-upgrade run`: configure logging, metrics and kopf from the command line, then run the handlers."""

from __future__ import annotations

import logging
import os
import sys


def run_operator(namespaces: list[str], all_namespaces: bool, selector: str, log_format: str, verbose: bool,
                 liveness_port: int, metrics_port: int, standalone: bool, install_timeout: float | None = None) -> int:
    from .engine import metrics
    from .engine.selector import SelectorError, parse

    try:
        parse(selector)
    except SelectorError as exc:
        print(f"uwm-upgrade run: {exc}", file=sys.stderr)
        return 2
    os.environ["UWM_UPGRADE_SELECTOR"] = selector
    exact = bool(namespaces) and not any(ch in ns for ns in namespaces for ch in "*?[!")
    os.environ["UWM_UPGRADE_SCANNING"] = "off" if exact else "on"
    if install_timeout is not None:
        if install_timeout <= 0:
            print("uwm-upgrade run: --install-timeout must be positive", file=sys.stderr)
            return 2
        os.environ["UWM_UPGRADE_INSTALL_TIMEOUT"] = str(install_timeout)

    import kopf

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat[log_format.upper()], log_prefix=True)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if metrics_port:
        metrics.serve(metrics_port)
    from . import handlers  # registers the handlers

    del handlers
    kopf.run(
        standalone=standalone,
        clusterwide=all_namespaces or not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )
    return 0
