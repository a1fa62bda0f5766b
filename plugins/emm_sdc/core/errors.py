"""Which failures are the infrastructure's (retry later) and which are the file's (quarantine).

A file whose handling fails the same way on every try must not block every
later run: on the last try, anything that is not an infrastructure error gets
the file quarantined with the error as its reason. Infrastructure errors (S3 or
PostgreSQL unreachable, throttled, timing out; a full local disk) leave the
file in the inbox, named in the run's report, for the next run.
"""

from __future__ import annotations

from emm_sdc.core.storage import error_code

#: S3 error codes that say "try again", whatever the object.
TRANSIENT_S3_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
    "RequestTimeTooSkewed", "ConditionalRequestConflict", "OperationAborted", "500", "502", "503", "504",
})


def is_transient(exc: BaseException) -> bool:
    """True for errors of the infrastructure rather than of the file being handled."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in TRANSIENT_S3_CODES or status >= 500
    if isinstance(exc, BotoCoreError | OSError | ConnectionError | TimeoutError):
        return True  # connection refused/closed, read timeouts, a full disk
    # DB-API drivers (psycopg 3, psycopg2): lost connections and server shutdowns are OperationalError or
    # InterfaceError; integrity or programming errors are not transient.
    names = {cls.__name__ for cls in type(exc).__mro__}
    module = type(exc).__module__
    return module.startswith(("psycopg", "psycopg2")) and bool(names & {"OperationalError", "InterfaceError"})
