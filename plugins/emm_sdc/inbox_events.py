"""Event-driven ingest: the inbox's S3 event notifications become Airflow Asset events.

The MOC's upload of a file (or of its ``.md5`` sidecar) makes S3 send an
``ObjectCreated`` notification to an SQS queue of that inbox area
(``emm-sdc-inbox-<inst>``, ``emm-sdc-inbox-spice``). The area's Asset
``emm_<area>_inbox`` watches the queue through the amazon provider's
``SqsSensorTrigger`` in Airflow's triggerer (an ``AssetWatcher``: long polls, no
worker slot, no loop of ours); each batch of messages is an Asset event, and the
ingest DAG, scheduled on that Asset *or* its cron, starts within seconds of the
upload. The cron stays as the safety net: it hands over files whose sidecar
never came (after the grace period) and anything whose notification was lost.

Deployments without the queues (``EMM_INBOX_QUEUE_URL_PREFIX`` unset) keep the
cron schedule with a deferrable S3 sensor. :func:`configure_inbox_events` sets the
queues and the bucket's notification up on an S3/SQS endpoint (the embedded
services do it at start; a production bucket's notifications belong to its
infrastructure code, with the same prefixes and queue names).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable

from emm_sdc.core.settings import get_settings

#: Queue name of an inbox area: ``emm-sdc-inbox-<inst>`` or ``emm-sdc-inbox-spice``.
QUEUE_NAME = "emm-sdc-inbox-{area}"
#: The S3 events that mean "something was delivered".
CREATED = ["s3:ObjectCreated:*"]
#: SQS long poll (seconds, the API's maximum) and the pause between polls that returned nothing.
LONG_POLL_SECONDS, POLL_PAUSE_SECONDS = 20, 1


def queue_url(area: str) -> str | None:
    """The SQS queue URL of an inbox area, or None when the deployment has no inbox events."""
    prefix = get_settings().inbox_queue_url_prefix
    return f"{prefix}{QUEUE_NAME.format(area=area)}" if prefix else None


def inbox_asset(area: str) -> Asset:
    """The Asset of one inbox area; it watches the area's queue when inbox events are configured."""
    from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger

    url = queue_url(area)
    watchers = []
    if url:
        trigger = SqsSensorTrigger(sqs_queue=url, aws_conn_id=get_settings().aws_conn_id, max_messages=10,
                                   wait_time_seconds=LONG_POLL_SECONDS, waiter_delay=POLL_PAUSE_SECONDS)
        watchers.append(AssetWatcher(name=f"emm_{area}_inbox_sqs", trigger=trigger))
    return Asset(name=f"emm_{area}_inbox", uri=f"emm://inbox/{area}", group="emm-inbox", watchers=watchers)


def inbox_schedule(area: str, cron: str) -> Any:
    """An inbox DAG's schedule: its Asset's events or its cron (cron alone without inbox events)."""
    if queue_url(area) is None or cron in ("@continuous", "@once"):
        return cron
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=[inbox_asset(area)])


def uses_events(area: str) -> bool:
    """True when this deployment delivers the area's S3 events through its queue."""
    return queue_url(area) is not None


def configure_inbox_events(s3: Any, sqs: Any, bucket: str, areas: Mapping[str, str]) -> dict[str, str]:
    """Create one queue per inbox area and point the bucket's ``ObjectCreated`` events at them.

    ``areas`` maps an area (``exi``, ``spice``, ...) to its key prefix. Idempotent (the
    bucket's notification configuration is replaced by the same one). Returns the queue URLs.
    """
    urls: dict[str, str] = {}
    configs = []
    for area, prefix in sorted(areas.items()):
        name = QUEUE_NAME.format(area=area)
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
                           "Action": "sqs:SendMessage", "Resource": arn,
                           "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}}}],
        })})
        configs.append({"Id": f"emm-inbox-{area}", "QueueArn": arn, "Events": CREATED,
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}})
        urls[area] = url
    s3.put_bucket_notification_configuration(Bucket=bucket,
                                             NotificationConfiguration={"QueueConfigurations": configs})
    return urls


def inbox_areas() -> dict[str, str]:
    """Every inbox area and its key prefix: each instrument's ``ingest.inbox_prefix`` (from its YAML, or its
    last-good copy while the YAML is broken) and ``spice``."""
    from emm_sdc.core.config import CONFIG_FILES, ConfigError
    from emm_sdc.core.config_store import load_instrument_or_last_good

    areas = {"spice": get_settings().spice_inbox_prefix}
    for inst in CONFIG_FILES:
        try:
            areas[inst] = load_instrument_or_last_good(inst)[0].ingest.inbox_prefix
        except ConfigError:
            areas[inst] = f"inbox/{inst}/"  # no valid config at all: its DAGs do not load; the default prefix
    return areas


def queue_url_prefix(url: str) -> str:
    """``EMM_INBOX_QUEUE_URL_PREFIX`` from one of the queue URLs :func:`configure_inbox_events` returned."""
    return url[: url.rindex("/") + 1]
