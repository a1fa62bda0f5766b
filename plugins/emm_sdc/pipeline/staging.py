"""Staging check and promotion of ITF images.

``emm_<inst>_staging_check`` (run by hand) processes the same reference inputs
with the candidate image and with the production image, in the staging
environment, through the instrument's runner (``docker`` when the YAML says
``local``), level by level as the chain says. Nothing is indexed as a
product. The two sets of products are compared with the ITF's tolerances
(FITS headers and data, PNG pixels); the report goes to
``emm/staging/<inst>/<check id>/report.json`` in the archive with both sets of
products, and the verdict into the catalog's ``staging_checks``. An
instrument's first image has nothing to compare with: its check passes when
every job's outputs meet the contract.

``emm_image_promote`` (run by hand, or ``./sdc promote``) makes a candidate
the production image, only after a passing check against the current
production image, and records who did it and why.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from emm_sdc import connections
from emm_sdc.campaigns import backfill_command
from emm_sdc.core import images
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.checksums import md5_file
from emm_sdc.core.compare import Tolerances, compare_products
from emm_sdc.core.config import ChainStep, ItfConfig
from emm_sdc.core.config_store import running_config
from emm_sdc.core.jobs import JobInput, JobSpec, OutputError, collect_outputs, safe_id
from emm_sdc.core.naming import STAGING_ROOT
from emm_sdc.core.settings import get_settings
from emm_sdc.core.storage import Storage
from emm_sdc.lanes import lane_args, queue_args
from emm_sdc.lifecycle import archive_log, build_chain, fail_run, job_context, open_job
from emm_sdc.notify import SdcNotifier
from emm_sdc.pipeline.common import START_DATE, dag_callbacks, default_args, fail_if_any_failed
from emm_sdc.pipeline.params import NAME_LIST, list_param, run_params, text_param
from emm_sdc.runners.batch import fetch_outputs

log = logging.getLogger(__name__)

# Task docs (doc_md): what each task does and what to do when it fails; the UI shows them on the task.
PLAN_CHECK_DOC = """\
**What it does**: resolves the candidate and production images and the reference L0 inputs, and opens the
staging-check record.

**If it fails**: "no candidate" or "already the production image": trigger again with another
`candidate_image`. Reference inputs not in the catalog: correct the names. Catalog unreachable: clear it.
"""
STAGE_DOC = """\
**What it does**: stages one image's {level} job (production or candidate): the reference L0 from the
archive, later levels from that image's own results; opens a staging processing-run record.
**Skipped**: the previous level made nothing.

**If it fails**: S3 or the catalog was unreachable: clear it after the outage.
"""
KEEP_DOC = """\
**What it does**: checks one image's {level} outputs against the ITF contract and keeps them for the next level
and the comparison (under `emm/staging/`); nothing is indexed as a product.

**If it fails**: outputs breaking the contract (named in the log): that image fails the check; the ITF fixes
it and a new check is run. S3 or the catalog was unreachable: run the check again after the outage.
"""
COMPARE_DOC = """\
**What it does**: compares production and candidate products level by level with the ITF's tolerances (FITS
headers and data, PNG pixels); writes `emm/staging/<inst>/<check>/report.json` and the verdict.

**If it fails**: the check FAILED (differences or failed jobs, summarised in the log and the report): the
candidate cannot be promoted. S3 or the catalog was unreachable: run the check again after the outage.
"""
PROMOTE_DOC = """\
**What it does**: makes the image production for the instrument (recorded with who and why), mails the ITF
and logs the backfill command that remakes the archive with it.

**If it fails**: "refused" (no passing staging check against the current production image): run
`emm_<inst>_staging_check` for it first. Catalog unreachable: trigger again after the outage.
"""


def staging_runner(cfg: ItfConfig) -> Any:
    """The runner a staging check uses: the instrument's, or docker when it runs locally."""
    runner = cfg.processing.runner
    return runner if runner.kind != "local" else runner.model_copy(update={"kind": "docker"})


def check_dir(dag_id: str, run_id: str) -> Path:
    return get_settings().work_dir / safe_id(dag_id) / safe_id(run_id)


def results_dir(base: Path, role: str, level: str) -> Path:
    return base / role / "results" / level


def reference_rows(cat: Catalog, cfg: ItfConfig, names: list[str]) -> list[dict[str, Any]]:
    """The L0 files to check with: the given names, or the latest archived orbit's science L0."""
    if names:
        rows = list(cat.files(names).values())
        missing = sorted(set(names) - {r["file_name"] for r in rows})
        if missing:
            raise AirflowFailException(f"reference inputs not in the catalog: {missing}")
        return rows
    rows = cat.l0_of_latest_orbit(cfg.instrument)
    rows = [r for r in rows if cfg.classify(r["file_name"]) == "science"]
    if not rows:
        raise AirflowFailException(f"no archived {cfg.instrument} L0 to use as reference inputs")
    return rows


def stage_level(cat: Catalog, storage: Storage, cfg: ItfConfig, step: ChainStep, role: dict[str, Any], *,
                dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> JobSpec | None:
    """Stage one level's job for one role: L0 from the archive, later levels from this role's results."""
    base = check_dir(dag_id, run_id)
    runner = staging_runner(cfg)
    workdir = base / role["role"] / "jobs" / step.level
    if workdir.exists():
        shutil.rmtree(workdir)
    inputs: list[tuple[JobInput, Path | None]] = []
    for src in step.inputs:
        if src == "l0":
            for r in cat.files(role["inputs"]).values():
                inputs.append((JobInput(r["file_name"], r["s3_key"], r["md5checksum"].strip(), "l0"), None))
        else:
            folder = results_dir(base, role["role"], src)
            for path in sorted(folder.glob("*")) if folder.exists() else []:
                inputs.append((JobInput(path.name, "", md5_file(path), src), path))
    if not inputs:
        return None
    spec = JobSpec(
        job_id=safe_id(f"{dag_id}__{run_id}__{role['role']}__{step.level}"), instrument=cfg.instrument,
        level=step.level, work_unit=f"staging-check-{role['check_id']}", workdir=str(workdir),
        version=cfg.processing.product_version, revision=0, kernel_class="n", inputs=[i for i, _ in inputs],
        environment="staging", parameters=dict(step.parameters), runner=runner.kind, image=role["image"],
        reason=f"staging check {role['check_id']} ({role['role']} image {role['image']})",
    )
    for inp, local in inputs:
        dest = spec.input_dir / inp.file_name
        if local is None:
            storage.download(get_settings().archive_bucket, inp.s3_key, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local, dest)
    open_job(cat, storage, cfg, spec, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
             try_number=try_number, staging_check_id=role["check_id"])
    return spec


def keep_results(cat: Catalog, storage: Storage, spec: JobSpec, role: dict[str, Any]) -> list[str]:
    """Validate a staging job's outputs; keep them for the next level and the comparison; close its run."""
    if spec.runner == "batch":
        fetch_outputs(storage, spec)
    try:
        products, processor = collect_outputs(spec)
    except OutputError as exc:
        fail_run(cat, storage, spec, 0, str(exc))
        raise AirflowFailException(str(exc)) from None
    base = Path(spec.workdir).parents[2]
    dest = results_dir(base, role["role"], spec.level)
    dest.mkdir(parents=True, exist_ok=True)
    bucket = get_settings().archive_bucket
    prefix = f"{STAGING_ROOT}/{spec.instrument}/{role['check_id']}/{role['role']}/{spec.level}"
    for p in products:
        shutil.copy2(p.path, dest / p.path.name)
        storage.upload_verified(p.path, bucket, f"{prefix}/{p.path.name}", md5=p.md5)
    assert spec.processing_run_id is not None
    cat.finish_run(spec.processing_run_id, status="success", ended_at=datetime.now(UTC), exit_status=0,
                   message=f"staging: {len(products)} output(s) kept, not indexed (processor {processor})",
                   log_uri=archive_log(storage, spec))
    return [p.path.name for p in products]


def _level_tasks(cfg: ItfConfig, step: ChainStep) -> tuple[Any, Any]:
    """The prepare and keep tasks of one level of a staging check (the runner's task goes between)."""

    @task(task_id="prepare", trigger_rule=TriggerRule.NONE_FAILED, doc_md=STAGE_DOC.format(level=step.level))
    def prepare(role: dict[str, Any]) -> dict[str, Any]:
        spec = stage_level(connections.catalog(), connections.storage(), cfg, step, role, **job_context())
        if spec is None:
            raise AirflowSkipException(f"no inputs for {step.level}")
        return spec.to_dict()

    @task(task_id="keep", doc_md=KEEP_DOC.format(level=step.level))
    def keep(job: dict[str, Any], _result: Any, role: dict[str, Any]) -> list[str]:
        """Validate the outputs and keep them for the next level and the comparison."""
        return keep_results(connections.catalog(), connections.storage(), JobSpec.from_dict(job), role)

    return prepare, keep


def build_staging_dag(cfg: ItfConfig) -> DAG:
    """``emm_<inst>_staging_check`` for one instrument."""
    inst = cfg.instrument
    runner = staging_runner(cfg)

    @dag(
        dag_id=f"emm_{inst}_staging_check",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={**default_args(cfg, "staging check"), "retries": 0, **queue_args("reprocessing")},
        **dag_callbacks(cfg.notifications, "staging check"),
        tags=["emm", inst, "staging"],
        doc_md=__doc__,
        params={
            "candidate_image": Param(cfg.processing.runner.staging_image, type=["null", "string"],
                                     title="Candidate image",
                                     description="image to check (default: runner.staging_image in the YAML); "
                                                 "a run with neither fails naming them"),
            "reference_inputs": Param(list(cfg.staging.reference_inputs) or None, **NAME_LIST,
                                      title="Reference inputs",
                                      description="L0 file names, one per line (empty: the YAML's "
                                                  "staging.reference_inputs, else the latest archived orbit)"),
        },
    )
    def staging_check() -> None:
        @task(doc_md=PLAN_CHECK_DOC)
        def plan_check() -> list[dict[str, Any]]:
            """Resolve images and reference inputs; open the staging-check record."""
            ctx = get_current_context()
            params = run_params(ctx)
            candidate = text_param(params, "candidate_image") or ""
            if not candidate:
                raise AirflowFailException(f"no candidate: set candidate_image or runner.staging_image in "
                                           f"{inst} config")
            cat = connections.catalog()
            production = images.production_image(cat, inst)
            if production == candidate:
                raise AirflowFailException(f"{candidate!r} is already the production image of {inst}")
            rows = reference_rows(cat, cfg, list_param(params, "reference_inputs"))
            names = sorted(r["file_name"] for r in rows)
            check_id = cat.start_staging_check(
                instrument=inst, candidate_image=candidate, production_image=production, dag_id=ctx["dag"].dag_id,
                dag_run_id=ctx["run_id"], reference_inputs=names)
            roles = [{"role": "candidate", "image": candidate}]
            if production:
                roles.insert(0, {"role": "production", "image": production})
            log.info("staging check %s: candidate %s vs production %s on %s", check_id, candidate, production, names)
            return [{**r, "inputs": names, "check_id": check_id} for r in roles]

        @task_group(group_id="image")
        def image_chain(role: dict[str, Any]) -> None:
            # A check is occasional, heavy work: the reprocessing lane, never in daily processing's way.
            build_chain(cfg.processing.chain, role, runner, lambda step: _level_tasks(cfg, step),
                        lane_args(cfg, "reprocessing"))

        @task(trigger_rule=TriggerRule.ALL_DONE, doc_md=COMPARE_DOC)
        def compare(roles: list[dict[str, Any]]) -> dict[str, Any]:
            """Compare production and candidate products level by level; store the report and verdict."""
            ctx = get_current_context()
            cat, storage = connections.catalog(), connections.storage()
            base = check_dir(ctx["dag"].dag_id, ctx["run_id"])
            check_id = roles[0]["check_id"]
            tol = Tolerances.from_dict(cfg.staging.tolerances)
            levels: dict[str, Any] = {}
            passed = True
            lines = []
            failed_jobs = [r for r in cat.runs_of_staging_check(check_id) if r["status"] != "success"]
            if failed_jobs:
                passed = False
                lines += [f"job failed: {r['data_level']} {r['reason']}: {(r['message'] or '')[:300]}"
                          for r in failed_jobs]
            for step in cfg.processing.chain:
                cand = results_dir(base, "candidate", step.level)
                if len(roles) == 1:  # first image: outputs validated by the contract, nothing to compare
                    made = sorted(p.name for p in cand.glob("*")) if cand.exists() else []
                    levels[step.level] = {"validated": made}
                    if not made:
                        passed = False
                        lines.append(f"{step.level}: the candidate made no products")
                    continue
                prod = results_dir(base, "production", step.level)
                for d in (prod, cand):
                    d.mkdir(parents=True, exist_ok=True)
                report = compare_products(prod, cand, tol)
                levels[step.level] = report.to_dict()
                passed &= report.passed
                lines.append(f"{step.level}: {report.summary()}")
            verdict = "passed" if passed else "failed"
            body = {"check_id": check_id, "instrument": inst, "verdict": verdict,
                    "candidate": roles[-1]["image"], "production": roles[0]["image"] if len(roles) > 1 else None,
                    "reference_inputs": roles[0]["inputs"], "tolerances": tol.to_dict(), "levels": levels,
                    "summary": lines}
            bucket = get_settings().archive_bucket
            key = f"{STAGING_ROOT}/{inst}/{check_id}/report.json"
            storage.put_json(bucket, key, body)
            summary = "\n".join(lines) or "all levels identical or within tolerance"
            cat.finish_staging_check(check_id, status=verdict, summary=summary[:8000], report_uri=f"s3://{bucket}/{key}")
            shutil.rmtree(base, ignore_errors=True)
            log.info("staging check %s %s:\n%s", check_id, verdict.upper(), summary)
            if not passed:
                raise AirflowFailException(f"staging check {check_id} FAILED (report s3://{bucket}/{key}):\n{summary}")
            return body

        roles = plan_check()
        chains = image_chain.expand(role=roles)
        chains >> compare(roles)
        chains >> fail_if_any_failed()

    return staging_check()


def build_promote_dag() -> DAG:
    """``emm_image_promote``: make a checked candidate the production image of an instrument."""

    @dag(
        dag_id="emm_image_promote",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        default_args={"owner": "sdc-ops", "retries": 0},
        **dag_callbacks(None, "image promotion"),
        tags=["emm", "staging"],
        doc_md=__doc__,
        params={
            "instrument": Param("exi", type="string", enum=["exi", "emu", "emr"], title="Instrument",
                                description="the instrument whose production image changes"),
            # Required by design: no valid default, so the form cannot trigger until an image is typed.
            "image": Param("", type="string", minLength=1, title="Image (required)",
                           description="the candidate image to promote; required, no default (it must have "
                                       "passed a staging check against the current production image)"),
            "reason": Param(None, type=["null", "string"], title="Reason",
                            description="why (optional; recorded with the promotion)"),
        },
    )
    def promote_dag() -> None:
        @task(doc_md=PROMOTE_DOC)
        def promote() -> dict[str, Any]:
            ctx = get_current_context()
            p = run_params(ctx)
            try:
                record = images.promote(connections.catalog(), p["instrument"], p["image"],
                                        promoted_by=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
                                        reason=text_param(p, "reason"))
            except images.PromotionRefused as exc:
                raise AirflowFailException(str(exc)) from None
            cfg = running_config(p["instrument"])
            backfill = backfill_command(connections.catalog(), cfg, f"image {p['image']} promoted",
                                        campaign=f"{p['instrument']} image {p['image'].rsplit(':', 1)[-1]}")
            log.info("to remake the archive with the new image: %s", backfill or "(no L0 archived yet)")
            SdcNotifier.from_config(
                cfg.notifications, subject=f"[EMM SDC] {p['image']} is now production for {p['instrument']}",
                body=(f"Promoted after staging check {record['staging_check_id']} ({record['report_uri']}); "
                      f"previous: {record['previous_image']}. Set processing.runner.image to {p['image']} in "
                      f"the {p['instrument']} config; production runs refuse any other image."
                      + (f"\n\nTo reprocess the archive with it (after the config change):\n  {backfill}"
                         if backfill else "")),
            ).notify(ctx)
            return {**record, "backfill_command": backfill}

        promote()

    return promote_dag()

