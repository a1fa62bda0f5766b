"""Airflow plugin: serves the EMM science-files API from Airflow's own API server.

``airflow api-server`` (and so ``airflow standalone``) mounts it at ``/emm/api``.
Airflow does not authenticate plugin apps: the API verifies Cognito tokens
itself (emm_sdc/api/auth.py). An external view links it from the Airflow UI.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from emm_sdc.api.app import create_app

API_PREFIX = "/emm/api"


class EmmSdcPlugin(AirflowPlugin):
    """The EMM SDC's API (and, under Browse, a link to its documentation)."""

    name = "emm_sdc"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": create_app(), "url_prefix": API_PREFIX, "name": "EMM science-files API"},
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {"name": "EMM science-files API", "href": f"{API_PREFIX}/docs", "destination": "nav", "category": "browse"},
    ]
