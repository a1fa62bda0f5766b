"""Which failures are the infrastructure's (retry, the file waits) and which are the file's (quarantine)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from emm_sdc.core.errors import is_transient


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("exc", "transient"), [
    (_client_error("InternalError", 500), True),
    (_client_error("SlowDown", 503), True),
    (_client_error("AccessDenied", 403), False),
    (_client_error("NoSuchKey", 404), False),
    (EndpointConnectionError(endpoint_url="http://s3"), True),
    (ReadTimeoutError(endpoint_url="http://s3"), True),
    (OSError(28, "No space left on device"), True),
    (ValueError("bad packet"), False),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), False),
])
def test_transient_or_not(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_database_outages_are_transient_but_integrity_errors_are_not() -> None:
    import psycopg

    assert is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert is_transient(psycopg.errors.AdminShutdown("terminating connection due to administrator command"))
    assert not is_transient(psycopg.errors.UniqueViolation("duplicate key"))
