"""DAG Params the Airflow 3 Trigger form can submit with their defaults, and reading them back.

How the form (``FlexibleForm``) renders a Param follows from its JSON schema: a type without ``"null"``
is *required* and an empty value (``null``, ``""``) disables Trigger; an ``array`` of strings (or of
items with no ``type``) is a text box with one value per line, and clearing it sends ``null``; an
``array`` with ``examples`` is a multi-select of those values; any other array (e.g. of integers) is a
raw JSON editor. So optional lists here are ``["null", "array"]`` of strings, pick lists carry
``examples``, and the readers below treat ``None``, ``[]`` and blank lines as "not given".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

#: A list of names: a nullable array of strings (one per line in the form; cleared = null = not given).
NAME_LIST: dict[str, Any] = {"type": ["null", "array"], "items": {"type": "string"}}
#: Orbit numbers, edited one per line like NAME_LIST (the form edits integer arrays only as raw JSON),
#: so lines of digits; integers are accepted too, for CLI and REST confs.
ORBIT_LIST: dict[str, Any] = {"type": ["null", "array"], "items": {"anyOf": [
    {"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\s*\d*\s*$"}]}}


def pick_list(options: Sequence[str], *, title: str, description: str) -> Param:
    """An optional multi-select of ``options`` (default: none chosen, sent as null)."""
    return Param(None, type=["null", "array"], items={"type": "string", "enum": list(options)},
                 examples=list(options), uniqueItems=True, title=title, description=description)


def list_param(params: Mapping[str, Any], name: str) -> list[str]:
    """A list Param's values, stripped, blank entries dropped; ``None`` and ``[]`` mean "not given"."""
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise AirflowFailException(f"param {name}: expected a list of values, got {value!r}")
    return [text for text in (str(v).strip() for v in value) if text]


def orbits_param(params: Mapping[str, Any], name: str = "orbits") -> list[int]:
    """An orbit-number list Param as integers; a value that is not a whole number fails naming the param."""
    orbits = []
    for text in list_param(params, name):
        if not (text.isascii() and text.isdigit()):
            raise AirflowFailException(f"param {name}: {text!r} is not an orbit number "
                                       "(give whole numbers, one per line)")
        orbits.append(int(text))
    return orbits


def day_param(params: Mapping[str, Any], name: str) -> date | None:
    """A date Param (YYYY-MM-DD), or None when empty; anything else fails naming the param."""
    value = params.get(name)
    if value is None or str(value).strip() == "":
        return None
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise AirflowFailException(f"param {name}: {value!r} is not a date (YYYY-MM-DD)") from None


def text_param(params: Mapping[str, Any], name: str) -> str | None:
    """A text Param, stripped; None when empty."""
    value = params.get(name)
    if value is None:
        return None
    return str(value).strip() or None


def run_params(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """The run's params, after refusing conf keys the DAG has no param for.

    Airflow adds unknown ``--dag-run-conf`` keys to the params silently, so a misspelt or retired key
    (``{"reprocess": true}`` on ``emm_<inst>_process``) would run with the defaults instead of failing.
    """
    known = set(ctx["dag"].params.keys())
    unknown = sorted(set(getattr(ctx["dag_run"], "conf", None) or {}) - known)
    if unknown:
        raise AirflowFailException(
            f"{ctx['dag'].dag_id}: conf key(s) {', '.join(map(repr, unknown))} are not params of this DAG; "
            f"its params: {', '.join(sorted(known)) or 'none'}")
    return dict(ctx["params"])
