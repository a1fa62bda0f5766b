"""Airflow plugin: serves the EMM science-files API and the science data page from Airflow's own API server.

``airflow api-server`` (and so ``airflow standalone``) mounts the API at ``/emm/api`` and the page at
``/emm/``. Airflow does not authenticate plugin apps: the API verifies Cognito tokens itself
(emm_sdc/api/auth.py). External views link both from the Airflow UI (Browse).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from emm_sdc.api.app import create_app
from emm_sdc.web.app import create_app as create_page_app

API_PREFIX = "/emm/api"
PAGE_PREFIX = "/emm"


class EmmSdcPlugin(AirflowPlugin):
    """The EMM SDC's API and science data page."""

    name = "emm_sdc"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": create_app(), "url_prefix": API_PREFIX, "name": "EMM science-files API"},
        # after the API: Starlette matches mounts in order, and /emm is a prefix of /emm/api
        {"app": create_page_app(), "url_prefix": PAGE_PREFIX, "name": "EMM science data search"},
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        # the trailing slash matters: Airflow's UI catch-all route takes "/emm" without it
        {"name": "EMM science data search", "href": f"{PAGE_PREFIX}/", "destination": "nav", "category": "browse"},
        {"name": "EMM science-files API", "href": f"{API_PREFIX}/docs", "destination": "nav", "category": "browse"},
    ]
