"""Inbox S3 events on the local endpoint: a delivery's upload lands as a message in its area's queue."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

import boto3

from emm_sdc.inbox_events import configure_inbox_events, queue_url_prefix

AREAS = {"exi": "inbox/exi/", "emu": "inbox/emu/", "spice": "inbox/spice/"}


def _keys(sqs: Any, url: str) -> list[str]:
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    keys = []
    for m in msgs:
        keys += [unquote_plus(r["s3"]["object"]["key"]) for r in json.loads(m["Body"]).get("Records", [])]
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return sorted(keys)


def test_each_upload_is_one_message_in_its_areas_queue(s3_server: Any, s3_client: Any, buckets: dict[str, str]) -> None:
    sqs = boto3.client("sqs", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                       aws_access_key_id="embedded", aws_secret_access_key="embedded")
    bucket = buckets["inbox"]
    urls = configure_inbox_events(s3_client, sqs, bucket, AREAS)
    assert configure_inbox_events(s3_client, sqs, bucket, AREAS) == urls  # idempotent
    for url in urls.values():  # the bucket's own test event, if the endpoint sends one
        _keys(sqs, url)
    s3_client.put_object(Bucket=bucket, Key="inbox/exi/a.bin", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key="inbox/exi/a.bin.md5", Body=b"y")
    s3_client.put_object(Bucket=bucket, Key="inbox/spice/k.bsp", Body=b"z")
    s3_client.put_object(Bucket=bucket, Key="elsewhere/b.bin", Body=b"w")
    assert _keys(sqs, urls["exi"]) == ["inbox/exi/a.bin", "inbox/exi/a.bin.md5"]
    assert _keys(sqs, urls["spice"]) == ["inbox/spice/k.bsp"]
    assert _keys(sqs, urls["emu"]) == []
    assert all(u.startswith(queue_url_prefix(urls["exi"])) and u.endswith(f"emm-sdc-inbox-{a}")
               for a, u in urls.items())


def test_s3_checkpoints_do_not_wait_for_sqs_long_polls(tmp_path: Any) -> None:
    """The standalone's S3 snapshot holds S3 requests while it is written, never the triggerer's 20 s long polls."""
    import threading

    from emm_dev.embedded import EmbeddedS3

    server = EmbeddedS3(snapshot=tmp_path / "s3.pickle").start()
    try:
        s3, sqs = server.client(), server.client("sqs")
        s3.create_bucket(Bucket="emm-snapshot-test")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        got: list[Any] = []
        poll = threading.Thread(target=lambda: got.extend(sqs.receive_message(
            QueueUrl=url, WaitTimeSeconds=20).get("Messages", [])))
        poll.start()
        s3.put_object(Bucket="emm-snapshot-test", Key="k", Body=b"x")
        server.checkpoint()  # returns while the long poll still waits
        assert poll.is_alive() and (tmp_path / "s3.pickle").exists()
        sqs.send_message(QueueUrl=url, MessageBody="m")
        poll.join(30)
        assert [m["Body"] for m in got] == ["m"]
    finally:
        server.stop()
