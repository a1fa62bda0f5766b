"""Public releases: ``emm_public_release`` (quarterly, or by hand) and ``emm_release_withdraw`` (by hand).

``emm_public_release`` runs at 06:00 UTC on the first day of each month a batch becomes due: with
the default lag of four months (``EMM_RELEASE_LAG_MONTHS``) on 1 Jan, Apr, Jul and Oct, releasing
the quarterly window that closed four months before (1 Oct 2021 released batch 1, orbit insertion
to 31 May 2021). By hand: ``batch`` or ``start_date``/``end_date``, ``instruments``, ``levels``,
``dry_run``, ``copy_to_public``; with no window the batch due at the run's date.

``plan`` picks the latest versions in the window that each ITF's YAML ``release`` section allows
(plus earlier batches' late products and newer revisions), ``verify`` reads every object and
compares its MD5 with the catalog's, ``publish`` records the release, its files and their
``released`` flags in one transaction, ``documents`` writes ``manifest.json``, ``manifest.csv``
and ``release_notes.md`` to ``emm/releases/<release>/``, ``copy_public`` copies all of it to
``EMM_PUBLIC_BUCKET`` keeping keys, and ``report`` fails the run when an object failed its check.
A published release is fixed: running it again changes nothing. See docs/releases.md.

``emm_release_withdraw`` withdraws files or a whole release with a mandatory reason: ``released``
turns false at once, each file is audited (who, when, why) and a withdrawal record is written
beside the release's manifest; public copies of withdrawn files are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, Param, TriggerRule, XComArg, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from emm_sdc import connections
from emm_sdc.core import naming, release
from emm_sdc.core.config import ConfigError
from emm_sdc.core.config_store import running_config
from emm_sdc.core.release import ReleaseError, Rules, Window
from emm_sdc.core.settings import get_settings
from emm_sdc.pipeline.common import START_DATE, dag_callbacks, fail_if_any_failed
from emm_sdc.pipeline.params import NAME_LIST, list_param, pick_list, run_params, text_param

log = logging.getLogger(__name__)

# Task docs (doc_md): what each task does and what to do when it fails; the UI shows them on the task.
PLAN_DOC = """\
**What it does**: resolves the window (`batch`, the dates, else the batch due) and selects the latest versions
each ITF YAML's `release` rules allow; selects nothing for a release already published.

**If it fails**: a window or param error is in the log: trigger again with corrected params. A broken ITF
YAML: fix it, then clear. Catalog unreachable: clear it after the outage.
"""
VERIFY_DOC = """\
**What it does**: reads every object of one chunk of the selection and compares its size and MD5 with the
catalog's; a mismatch is withheld from the release (the `report` task names it).

**If it fails**: S3 or the catalog was unreachable: clear it after the outage. Withheld files do not fail it.
"""
PUBLISH_DOC = """\
**What it does**: records the release, its files and their `released` flags in one transaction; nothing in a
dry run, for a release that exists, or when no file passed.

**If it fails**: catalog unreachable: clear it after the outage (all or nothing; publishing a window twice
changes nothing). An upstream `verify` failed: clear that one first.
"""
DOCUMENTS_DOC = """\
**What it does**: writes `manifest.json`, `manifest.csv` and `release_notes.md` to `emm/releases/<release>/`,
rendered from the catalog, where they are missing.

**If it fails**: S3 or the catalog was unreachable: clear it after the outage. "exists with other content":
documents are never overwritten; find out what wrote that object before removing it, then clear.
"""
COPY_PUBLIC_DOC = """\
**What it does**: copies the released files and the release documents to `EMM_PUBLIC_BUCKET` (same keys),
when `copy_to_public` or the setting asks for it.

**If it fails**: "EMM_PUBLIC_BUCKET is not set": set it, or trigger with `copy_to_public` false. S3 outage or
objects not copied: clear it after the outage (copies made are kept).
"""
REPORT_DOC = """\
**What it does**: fails the run (so the operators are mailed) when archived objects failed their integrity
check; they were not released. Otherwise logs the summary.

**If it fails**: repair the named objects (restore them so their MD5 matches the catalog's); they go out with
the next batch. Clearing it would fail again.
"""
WITHDRAW_DOC = """\
**What it does**: withdraws the files (or the whole release): `released` turns false at once and each file is
audited with who, when and the reason, in one transaction.

**If it fails**: a param error (no reason, both or neither of `file_names` and `release`, unknown names) is
in the log: trigger again with corrected params. Catalog unreachable: trigger again after the outage.
"""
RECORD_DOC = """\
**What it does**: writes this run's withdrawal records beside the releases' manifests and deletes the public
copies of the withdrawn files. Skipped in a dry run.

**If it fails**: S3 or the catalog was unreachable: clear it after the outage (the files are already
withdrawn; records are written once).
"""
_PRODUCT_LEVELS = sorted({lv for levels in naming.LEVELS.values() for lv in levels} - set(naming.RAW_LEVELS))
_DEFAULT_ARGS = {"owner": "sdc-ops", "retries": 2, "retry_delay": timedelta(minutes=5)}


def _window(plan: dict[str, Any]) -> Window:
    w = plan["window"]
    return Window(date.fromisoformat(w["start"]), date.fromisoformat(w["end"]), w["batch"])


def _rules(plan: dict[str, Any]) -> list[Rules]:
    return [Rules(r["instrument"], tuple(r["levels"]), r["min_pred_rec"]) for r in plan["rules"]]


def _requested_by(ctx: Any) -> str:
    """Who started this run: the triggering user when Airflow knows one, else the run id."""
    user = getattr(ctx.get("dag_run"), "triggering_user_name", None)
    return str(user) if user else str(ctx["run_id"])


def build_release_dag() -> DAG:
    """``emm_public_release``: the quarterly public release (also by hand with Params)."""
    lag = release.lag_months()

    @dag(
        dag_id="emm_public_release",
        schedule=CronTriggerTimetable(release.schedule_cron(lag), timezone="UTC"),
        # Orbit insertion, not START_DATE: Airflow creates no task instances for a run dated before the
        # tasks' start date, and runs for past release dates (by hand, with a logical date) are legitimate.
        start_date=datetime.combine(release.MISSION_START, time(), tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        default_args=_DEFAULT_ARGS,
        **dag_callbacks(None, "public release"),
        tags=["emm", "release"],
        doc_md=__doc__,
        params={
            "batch": Param(None, type=["null", "integer"], minimum=1,
                           description="batch number (1 = orbit insertion to 2021-05-31, 2 = Jun-Aug 2021, ...); "
                                       "empty: the batch due at the run's date"),
            "start_date": Param(None, type=["null", "string"], format="date",
                                description="first day of a window (YYYY-MM-DD), with end_date, instead of batch"),
            "end_date": Param(None, type=["null", "string"], format="date",
                              description="last day of the window (inclusive), with start_date"),
            "instruments": pick_list(naming.INSTRUMENTS, title="Instruments",
                                     description="release only these instruments (empty: all three)"),
            "levels": pick_list(_PRODUCT_LEVELS, title="Levels",
                                description="release only these levels, within each ITF YAML's release levels "
                                            "(empty: what the YAMLs release)"),
            "dry_run": Param(False, type="boolean",
                             description="select and verify, report what would be released, write nothing"),
            "copy_to_public": Param(None, type=["null", "boolean"],
                                    description="copy to EMM_PUBLIC_BUCKET: empty = when it is set; "
                                                "true = required; false = do not copy"),
        },
    )
    def public_release() -> None:
        @task(doc_md=PLAN_DOC)
        def plan() -> list[dict[str, Any]]:
            """Resolve the window; select what the ITFs' rules release (nothing when already published).

            Returns the verification chunks; the plan itself is the XCom ``plan``.
            """
            ctx = get_current_context()
            params = run_params(ctx)
            at = ctx.get("logical_date") or ctx["dag_run"].run_after
            try:
                window = release.resolve_window(params, at, lag)
            except (ReleaseError, ValueError) as exc:
                raise AirflowFailException(str(exc)) from None
            cat = connections.catalog()
            existing = release.release_row(cat, window.name)
            out: dict[str, Any] = {"window": release.as_dict(window), "dry_run": bool(params["dry_run"]),
                                   "existing": existing is not None, "rules": []}
            ctx["ti"].xcom_push(key="plan", value=out)
            if existing is not None:
                log.info("%s was published on %s with %d file(s); it is fixed: nothing is selected again "
                         "(newer versions go out with the next batch)", window.name, existing["published_at"],
                         existing["file_count"])
                return []
            configs = {}
            instruments, levels = list_param(params, "instruments"), list_param(params, "levels")
            for inst in instruments or naming.INSTRUMENTS:
                try:
                    configs[inst] = running_config(inst)
                except ConfigError as exc:
                    raise AirflowFailException(f"cannot release {inst}: {exc}") from None
            try:
                rules = release.rules_for(configs, instruments, levels)
            except ReleaseError as exc:
                raise AirflowFailException(str(exc)) from None
            rows = release.select(cat, window, rules)
            out["rules"] = [asdict(r) for r in rules]
            ctx["ti"].xcom_push(key="plan", value=out)
            log.info("%s (%s to %s): %d file(s), %s selected; %d carried over from earlier windows; rules %s",
                     window.name, window.start, window.end, len(rows),
                     release.human_bytes(sum(r["file_size"] for r in rows)),
                     sum(1 for r in rows if r["selection"] == "carry-over"), release.rules_record(rules))
            return release.chunks(rows)

        @task(map_index_template="{{ chunk_label }}", doc_md=VERIFY_DOC)
        def verify(chunk: dict[str, Any]) -> dict[str, Any]:
            """Read each selected object and compare its size and MD5 with the catalog's."""
            get_current_context()["chunk_label"] = chunk["label"]  # type: ignore[typeddict-unknown-key]
            rows = connections.catalog().files_to_verify(chunk["ids"])
            ok, withheld = release.verify(connections.storage(), rows)
            for w in withheld:
                log.error("withheld %s (%s): %s; expected %s, found %s", w["file_name"], w["s3_key"], w["reason"],
                          w["expected"], w["found"])
            log.info("%s: %d verified, %d withheld", chunk["label"], len(ok), len(withheld))
            return {"ok": ok, "withheld": withheld}

        @task(trigger_rule=TriggerRule.NONE_FAILED, doc_md=PUBLISH_DOC)
        def publish(plan: dict[str, Any], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
            """Record the release, its files and their released flags in one transaction.

            Nothing is recorded in a dry run, for a release that exists, or when no file passed.
            """
            ctx = get_current_context()
            window = _window(plan)
            results = list(results)
            ok = [o for r in results for o in r["ok"]]
            found = [w for r in results for w in r["withheld"]]
            cat = connections.catalog()
            base = {"name": window.name, "dry_run": plan["dry_run"], "found": found, "published": False}
            if plan["existing"]:
                row = release.release_row(cat, window.name)
                assert row is not None
                if row["withheld"]:
                    log.warning("%s withheld when it was published: %s", window.name, row["withheld"])
                return {**base, **_summary(row), "published": not plan["dry_run"]}
            if plan["dry_run"]:
                rows = cat.release_preview([o["id"] for o in ok], window.start_time)
                info = release.ReleaseInfo(window.name, window.batch, window.start, window.end, "(dry run)",
                                           release.rules_record(_rules(plan)), len(found))
                notes = release.release_notes(info, release.manifest_entries(rows)).decode()
                log.info("DRY RUN: nothing written. %s would release %d file(s), %d withheld:\n%s", window.name,
                         len(ok), len(found), notes)
                return {**base, "file_count": len(ok), "total_bytes": sum(o["size"] for o in ok)}
            if not ok:
                log.warning("%s: no file to release; no release is recorded (run it again once there is)",
                            window.name)
                return {**base, "file_count": 0, "total_bytes": 0}
            row = release.publish(cat, window, _rules(plan), ok, found, dag_id=ctx["dag"].dag_id,
                                  dag_run_id=ctx["run_id"])
            if row is None:
                log.warning("%s: every verified file changed meanwhile; no release is recorded", window.name)
                return {**base, "file_count": 0, "total_bytes": 0}
            if row["created"]:
                log.info("published %s: %d file(s), %s", window.name, row["file_count"],
                         release.human_bytes(row["total_bytes"]))
            else:
                log.warning("%s was published meanwhile by %s; this run changed nothing", window.name,
                            row["dag_run_id"])
            return {**base, **_summary(row), "published": True}

        @task(doc_md=DOCUMENTS_DOC)
        def documents(summary: dict[str, Any]) -> dict[str, str]:
            """Write the manifest (JSON, CSV) and release notes, rendered from the catalog, where missing."""
            if not summary["published"]:
                raise AirflowSkipException("nothing published by this run: nothing is written")
            cat = connections.catalog()
            row = release.release_row(cat, summary["name"])
            assert row is not None
            try:
                written = release.write_documents(cat, connections.storage(), get_settings().archive_bucket, row)
            except ReleaseError as exc:
                raise AirflowFailException(str(exc)) from None
            log.info("release documents: %s", written)
            return written

        @task(doc_md=COPY_PUBLIC_DOC)
        def copy_public(summary: dict[str, Any]) -> dict[str, Any]:
            """Server-side copy of the released files and the release's documents to the public bucket."""
            choice = get_current_context()["params"]["copy_to_public"]
            if not summary["published"]:
                raise AirflowSkipException("nothing published by this run: nothing is copied")
            public = release.public_bucket()
            if choice is False or (choice is None and public is None):
                raise AirflowSkipException("no copy to a public bucket requested (copy_to_public / EMM_PUBLIC_BUCKET)")
            if public is None:
                raise AirflowFailException("copy_to_public is true but EMM_PUBLIC_BUCKET is not set")
            cat = connections.catalog()
            row = release.release_row(cat, summary["name"])
            assert row is not None
            result = release.copy_release(cat, connections.storage(), get_settings().archive_bucket, public, row)
            log.info("copied %d object(s) to s3://%s, %d already there", len(result["copied"]), public,
                     result["present"])
            if result["failed"]:
                raise AirflowFailException(f"{len(result['failed'])} object(s) not copied to {public}: "
                                           f"{result['failed'][:20]}")
            return {"copied": len(result["copied"]), "present": result["present"]}

        @task(trigger_rule=TriggerRule.ALL_DONE, retries=0, doc_md=REPORT_DOC)
        def report() -> dict[str, Any]:
            """Fail the run (so the operators are told) when this run found objects failing their integrity check."""
            summary = get_current_context()["ti"].xcom_pull(task_ids="publish", default=None)
            if not summary:
                raise AirflowSkipException("nothing was published; see the failed task")
            bad = [w for w in summary["found"] if w["reason"] in release.INTEGRITY_REASONS]
            if bad:
                lines = "\n".join(f"- {w['file_name']} ({w['s3_key']}): {w['reason']}, expected {w['expected']}, "
                                  f"found {w['found']}" for w in bad)
                raise AirflowFailException(
                    f"{summary['name']}: {len(bad)} archived object(s) failed the integrity check and were NOT "
                    f"released (once repaired they go out with the next batch):\n{lines}")
            log.info("%s: %s", summary["name"], {k: v for k, v in summary.items() if k != "found"})
            return summary

        chunks = plan()
        published = publish(XComArg(chunks.operator, key="plan"), verify.expand(chunk=chunks))
        docs = documents(published)
        copied = copy_public(published)
        docs >> copied
        reported = report()
        [published, docs, copied] >> reported
        [reported, copied] >> fail_if_any_failed()

    return public_release()


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """A published release as task output."""
    return {"name": row["name"], "batch": row["batch"], "start": str(row["period_start"]),
            "end": str(row["period_end"]), "published_at": str(row["published_at"]), "status": row["status"],
            "file_count": row["file_count"], "total_bytes": row["total_bytes"],
            "withheld": list(row["withheld"] or []), "created": bool(row.get("created"))}


def build_withdraw_dag() -> DAG:
    """``emm_release_withdraw``: withdraw released files or a whole release, by hand, with a reason."""

    @dag(
        dag_id="emm_release_withdraw",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=_DEFAULT_ARGS,
        **dag_callbacks(None, "release withdrawal"),
        tags=["emm", "release"],
        doc_md=__doc__,
        params={
            "file_names": Param(None, **NAME_LIST, title="File names",
                                description="released files to withdraw, one per line (or give release)"),
            "release": Param(None, type=["null", "string"], title="Release",
                             description="withdraw a whole release: batch number (7), batch-07 or special-..."),
            # Required by design: no valid default, so the form cannot trigger until a reason is typed.
            "reason": Param("", type="string", minLength=1, pattern=r"\S", title="Reason (required)",
                            description="why; required, no default: the form triggers once it is filled "
                                        "(recorded with who and when)"),
            "dry_run": Param(False, type="boolean", description="show what would be withdrawn; change nothing"),
        },
    )
    def release_withdraw() -> None:
        @task(retries=0, doc_md=WITHDRAW_DOC)
        def withdraw() -> dict[str, Any]:
            """Set released=false at once for the files, auditing each (one transaction)."""
            ctx = get_current_context()
            p = run_params(ctx)
            try:
                summary = release.withdraw(
                    connections.catalog(), reason=p["reason"], requested_by=_requested_by(ctx),
                    file_names=list_param(p, "file_names"), release=text_param(p, "release"), dag_id=ctx["dag"].dag_id,
                    dag_run_id=ctx["run_id"], dry_run=p["dry_run"])
            except ReleaseError as exc:
                raise AirflowFailException(str(exc)) from None
            log.info("%swithdrawn: %s; not released (left alone): %s", "DRY RUN, would be " if p["dry_run"] else "",
                     summary["withdrawn"], summary["not_released"])
            return summary

        @task(doc_md=RECORD_DOC)
        def record(summary: dict[str, Any]) -> dict[str, Any]:
            """Write this run's withdrawal records beside the releases' manifests; delete public copies."""
            if summary["dry_run"]:
                raise AirflowSkipException("dry run: nothing is written")
            ctx = get_current_context()
            rows = connections.catalog().withdrawals_of_run(ctx["dag"].dag_id, ctx["run_id"])
            storage = connections.storage()
            archive, public = get_settings().archive_bucket, release.public_bucket()
            out: dict[str, Any] = {"records": [], "public_removed": []}
            for key, data in release.withdrawal_records(rows).items():
                for bucket in filter(None, (archive, public)):
                    release.put_once(storage, bucket, key, data, "application/json")
                out["records"].append(key)
            if public:
                for r in rows:
                    if release.remove_public_copy(storage, public, r["s3_key"], str(r["md5checksum"]).strip()):
                        out["public_removed"].append(r["s3_key"])
            log.info("withdrawal records: %s; public copies removed: %d", out["records"], len(out["public_removed"]))
            return out

        record(withdraw())

    return release_withdraw()
