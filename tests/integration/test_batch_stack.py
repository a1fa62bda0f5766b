"""The AWS Batch stack generated from the ITF YAMLs: valid CloudFormation, deployed into moto, used by the runner.

What moto's CloudFormation leaves out (the scheduling policies, a job definition's Timeout) is created
through the Batch API from the same generated resources (tests/integration/batch_stack_deploy.py); the
IAM policies are read back from moto's IAM and evaluated with moto's own IAM policy evaluator.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.api import ManualArgs, lint
from moto.iam.access_control import IAMPolicy, PermissionResult

from emm_sdc.core.config import ConfigError, RunnerConfig, config_dir, load_config
from emm_sdc.core.jobs import JobInput, JobSpec, safe_id
from emm_sdc.core.storage import Storage
from emm_sdc.deploy import batch_stack
from emm_sdc.runners.batch import ensure_job_definition, share_identifier, stage_inputs
from tests.integration.batch_stack_deploy import Deployed, deploy

BUCKET = "emm-stack-archive"
OTHER = {"exi": "emu", "emu": "emr", "emr": "exi"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return batch_stack.batch_template(batch_stack.load_itfs())


@pytest.fixture(scope="module")
def stack(s3_server: Any, template: dict[str, Any]) -> Deployed:
    return deploy(s3_server.endpoint, template, "111122223333", bucket=BUCKET)


def test_template_is_valid_cloudformation(template: dict[str, Any], tmp_path: Path) -> None:
    """cfn-lint checks every resource against CloudFormation's published schemas (types, required, enums)."""
    for fmt in ("json", "yaml"):
        text = batch_stack.render(template, fmt)
        problems = lint(text, config=ManualArgs(regions=["us-east-1"]))
        assert not problems, "\n".join(str(p) for p in problems)
    assert yaml.safe_load(batch_stack.render(template, "yaml")) == json.loads(batch_stack.render(template, "json"))


def test_stack_deploys_compute_queues_and_definitions(stack: Deployed) -> None:
    assert stack.status == "CREATE_COMPLETE"
    batch = stack.client("batch")
    envs = {e["computeEnvironmentName"]: e for e in batch.describe_compute_environments()["computeEnvironments"]}
    assert set(envs) == {"emm-sdc-daily", "emm-sdc-reprocessing"}
    # defaults follow the YAMLs' pools: 3 ITFs x 4 daily slots x 1 vCPU, 3 x 1 reprocessing slot
    assert envs["emm-sdc-daily"]["computeResources"]["maxvCpus"] == 12
    assert envs["emm-sdc-reprocessing"]["computeResources"]["maxvCpus"] == 3
    queues = {q["jobQueueName"]: q for q in batch.describe_job_queues()["jobQueues"]}
    yaml_queues = {load_config(config_dir() / f).processing.runner.batch.job_queues[lane]  # type: ignore[union-attr]
                   for f in ("exi.yaml", "emus.yaml", "emirs.yaml") for lane in ("daily", "reprocessing")}
    assert set(queues) == yaml_queues == {"emm-daily", "emm-reprocessing"}
    daily, reproc = queues["emm-daily"], queues["emm-reprocessing"]
    assert int(daily["priority"]) > int(reproc["priority"])
    order = {q: [envs_by_arn for envs_by_arn in sorted(queues[q]["computeEnvironmentOrder"], key=lambda o: o["order"])]
             for q in queues}
    name_of = {e["computeEnvironmentArn"]: n for n, e in envs.items()}
    assert [name_of[o["computeEnvironment"]] for o in order["emm-daily"]] == ["emm-sdc-daily", "emm-sdc-reprocessing"]
    # a reprocessing campaign can never take the daily capacity
    assert [name_of[o["computeEnvironment"]] for o in order["emm-reprocessing"]] == ["emm-sdc-reprocessing"]
    policies = batch.describe_scheduling_policies(arns=[daily["schedulingPolicyArn"], reproc["schedulingPolicyArn"]])
    for policy in policies["schedulingPolicies"]:
        shares = {s["shareIdentifier"] for s in policy["fairsharePolicy"]["shareDistribution"]}
        assert shares == {"exi", "emu", "emr"} and policy["fairsharePolicy"]["computeReservation"] > 0
    for inst in ("exi", "emu", "emr"):
        cfg = load_config(config_dir() / {"exi": "exi.yaml", "emu": "emus.yaml", "emr": "emirs.yaml"}[inst])
        runner = cfg.processing.runner
        for env in ("production", "staging"):
            [*_, latest] = sorted(batch.describe_job_definitions(jobDefinitionName=f"emm-{inst}-{env}",
                                                                 status="ACTIVE")["jobDefinitions"],
                                  key=lambda j: j["revision"])
            props = latest["containerProperties"]
            assert props["image"] == runner.image and props["command"] == ["python3", "/opt/emm/processor.py"]
            assert {r["type"]: r["value"] for r in props["resourceRequirements"]} == {
                "VCPU": f"{runner.cpus:g}", "MEMORY": str(runner.memory_mb)}
            assert latest["timeout"] == {"attemptDurationSeconds": runner.timeout_minutes * 60}
            assert props["jobRoleArn"] == stack.role_arns[f"{inst.capitalize()}JobRole"]
            assert props["executionRoleArn"] == stack.role_arns["ExecutionRole"]
            assert latest["retryStrategy"]["attempts"] == 3
    print("created through the Batch API (moto's CloudFormation gaps):", stack.gaps)


def _job_policy(stack: Deployed, inst: str) -> dict[str, Any]:
    iam = stack.client("iam")
    role = batch_stack.job_role_name(inst)
    [name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    return _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])


def _document(doc: Any) -> dict[str, Any]:
    """A policy document as IAM returns it (moto's CloudFormation keeps an inline mapping as its Python repr)."""
    if not isinstance(doc, str):
        return doc
    try:
        return json.loads(doc)
    except json.JSONDecodeError:
        return ast.literal_eval(doc)


def _allowed(policy: dict[str, Any], action: str, key: str, bucket: str = BUCKET) -> bool:
    result = IAMPolicy(json.dumps(policy)).is_action_permitted(action, f"arn:aws:s3:::{bucket}/{key}")
    return result == PermissionResult.PERMITTED


@pytest.mark.parametrize("inst", ["exi", "emu", "emr"])
def test_job_role_reads_its_inputs_and_writes_its_outputs_only(stack: Deployed, inst: str, buckets: dict[str, str],
                                                              s3_client: Any, tmp_path: Path) -> None:
    policy = _job_policy(stack, inst)
    trust = stack.client("iam").get_role(RoleName=batch_stack.job_role_name(inst))["Role"]["AssumeRolePolicyDocument"]
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ecs-tasks.amazonaws.com"}]
    for st in policy["Statement"]:  # nothing broader than named keys in the archive bucket
        assert st["Effect"] == "Allow" and all(a.startswith("s3:") and "*" not in a for a in st["Action"])
        assert all(r.startswith(f"arn:aws:s3:::{BUCKET}/emm/") for r in st["Resource"]), st["Resource"]
    # a real job's staged keys, laid out by the batch runner itself
    job_id = safe_id(f"emm_{inst}_process__manual__2026-01-01T00:00:00+00:00__orbit-0011__l1")
    spec = JobSpec(job_id=job_id, instrument=inst, level="l1", work_unit="orbit-0011", workdir=str(tmp_path / "j"),
                   version=1, revision=0, kernel_class="n", runner="batch",
                   inputs=[JobInput("a.bin", "k", "5d41402abc4b2a76b9719d911017c592", "l0")])
    spec.input_dir.mkdir(parents=True)
    (spec.input_dir / "a.bin").write_bytes(b"hello")
    prefix = stage_inputs(Storage(s3_client), spec, buckets["archive"]).split("/", 3)[3]
    staged = [o["Key"] for o in s3_client.list_objects_v2(Bucket=buckets["archive"])["Contents"]]
    assert staged and all(k.startswith(prefix) for k in staged)
    for key in [*staged, "emm/spice/mk/emm_meta_v0001.tm", "emm/spice/spk/emm_spk_r_v01.bsp"]:
        assert _allowed(policy, "s3:GetObject", key), key
        assert not _allowed(policy, "s3:PutObject", key), key
    for key in (f"{prefix}out/emm_{inst}_l1_x.fits", f"{prefix}job.log"):
        assert _allowed(policy, "s3:PutObject", key) and _allowed(policy, "s3:AbortMultipartUpload", key)
    staging_check = safe_id(f"emm_{inst}_staging_check__manual__x__candidate__l1")
    assert _allowed(policy, "s3:PutObject", f"emm/work/{staging_check}/out/p.fits")
    other = OTHER[inst]
    denied = [("s3:GetObject", f"emm/data/{inst}/l0/2026/01/x.bin"),  # inputs come staged, never from the archive
              ("s3:GetObject", f"emm/work/emm_{other}_process__r__u__l1/in/a.bin"),
              ("s3:PutObject", f"emm/work/emm_{other}_process__r__u__l1/out/p.fits"),
              ("s3:PutObject", f"emm/data/{inst}/l1/2026/01/p.fits"),
              ("s3:PutObject", "emm/spice/mk/emm_meta_v0002.tm"),
              ("s3:GetObject", "emm/quarantine/x"), ("s3:GetObject", "inbox/exi/x"),
              ("s3:DeleteObject", f"{prefix}out/p.fits"), ("s3:ListBucket", ""),
              ("s3:PutObjectAcl", f"{prefix}job.log")]
    for action, key in denied:
        assert not _allowed(policy, action, key), (action, key)
    assert not _allowed(policy, "s3:GetObject", f"{prefix}input_manifest.json", bucket="another-bucket")


def test_execution_role_writes_job_logs_only(stack: Deployed) -> None:
    iam = stack.client("iam")
    [name] = iam.list_role_policies(RoleName=batch_stack.EXECUTION_ROLE)["PolicyNames"]
    policy = _document(iam.get_role_policy(RoleName=batch_stack.EXECUTION_ROLE, PolicyName=name)["PolicyDocument"])
    # the reference images are not in ECR, so no ECR statement (and no "*" resource) at all
    [logs] = policy["Statement"]
    assert logs["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs["Resource"] == [f"arn:aws:logs:us-east-1:{stack.account}:log-group:/aws/batch/job:*"]


def test_ecr_images_get_pull_rights_on_their_repositories_only(tmp_path: Path) -> None:
    folder = _configs(tmp_path, exi=lambda r: r.update(
        image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/emm/exi-itf:2.0.0"))
    template = batch_stack.batch_template(batch_stack.load_itfs(["exi", "emr"], folder))
    statements = {s["Sid"]: s for s in
                  template["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}
    assert statements["PullItfImages"]["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:ecr:eu-west-1:123456789012:repository/emm/exi-itf"}]
    assert statements["EcrToken"]["Action"] == ["ecr:GetAuthorizationToken"]  # AWS offers no resource to scope it


def test_the_batch_runner_uses_the_deployed_definitions_and_shares(stack: Deployed) -> None:
    """What runners/batch.py submits meets the stack: its definitions, its queues' fair shares."""
    batch = stack.client("batch")
    cfg = load_config(config_dir() / "emirs.yaml")
    runner = cfg.processing.runner
    assert runner.image
    deployed = ensure_job_definition(batch, "emr", "production", runner, runner.image)
    [*_, latest] = sorted(batch.describe_job_definitions(jobDefinitionName="emm-emr-production",
                                                        status="ACTIVE")["jobDefinitions"], key=lambda j: j["revision"])
    assert deployed == latest["jobDefinitionArn"]  # the stack's definition matches the YAML: no new revision
    # a YAML change (new image) makes a new revision that keeps the stack's roles and retry strategy
    recording = _Recording(batch)
    changed = ensure_job_definition(recording, "emr", "staging", runner, "localhost/emm-emr-ref:1.1.0")
    [sent] = recording.registered
    retry = sent["retryStrategy"]  # as the stack's revision holds it (Batch spells the actions in lower case)
    assert retry["attempts"] == 3 and [r["action"].upper() for r in retry["evaluateOnExit"]] == ["RETRY", "EXIT"]
    [new] = batch.describe_job_definitions(jobDefinitions=[changed])["jobDefinitions"]
    assert new["revision"] > 1 and new["containerProperties"]["image"] == "localhost/emm-emr-ref:1.1.0"
    assert new["containerProperties"]["jobRoleArn"] == stack.role_arns["EmrJobRole"]
    assert new["containerProperties"]["executionRoleArn"] == stack.role_arns["ExecutionRole"]
    for lane in ("daily", "reprocessing"):
        queue = runner.batch.job_queues[lane]  # type: ignore[union-attr]
        assert share_identifier(batch, queue, "emr") == "emr"
    env = batch.describe_compute_environments(computeEnvironments=["emm-sdc-daily"])["computeEnvironments"][0]
    batch.create_job_queue(jobQueueName="emm-fifo", priority=1, state="ENABLED",
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}])
    assert share_identifier(batch, "emm-fifo", "emr") is None  # AWS refuses a share identifier on a FIFO queue


class _Recording:
    """The moto Batch client, recording what is registered (moto's own new revision would copy an omitted
    retry strategy from the last one, hiding whether the runner sent it)."""

    def __init__(self, client: Any):
        self.client = client
        self.registered: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def register_job_definition(self, **kw: Any) -> Any:
        self.registered.append(kw)
        return self.client.register_job_definition(**kw)


def _configs(tmp_path: Path, **edits: Any) -> Path:
    folder = tmp_path / "itf"
    shutil.copytree(config_dir(), folder)
    for inst, edit in edits.items():
        path = folder / {"exi": "exi.yaml", "emu": "emus.yaml", "emr": "emirs.yaml"}[inst]
        data = yaml.safe_load(path.read_text())
        edit(data["processing"]["runner"])
        path.write_text(yaml.safe_dump(data))
    return folder


def test_generator_errors_name_the_file_and_field(tmp_path: Path) -> None:
    folder = _configs(tmp_path, emu=lambda r: r["batch"].update(job_queues={"daily": "emm-reprocessing",
                                                                            "reprocessing": "emm-daily"}))
    with pytest.raises(ConfigError) as err:
        batch_stack.batch_template(batch_stack.load_itfs(None, folder))
    assert "emus.yaml" in str(err.value) and "processing.runner.batch.job_queues" in str(err.value)
    assert "a queue serves one lane" in str(err.value)
    folder = _configs(tmp_path / "2", exi=lambda r: r["batch"].update(
        job_role_arn="arn:aws:iam::123456789012:role/admin"))
    with pytest.raises(ConfigError, match=r"exi.yaml(.|\n)*processing.runner.batch.job_role_arn(.|\n)*"
                                          r"emm-sdc-exi-batch-job"):
        batch_stack.batch_template(batch_stack.load_itfs(None, folder))
    ok = _configs(tmp_path / "3", exi=lambda r: r["batch"].update(
        job_role_arn="arn:aws:iam::123456789012:role/emm-sdc-exi-batch-job"))
    assert batch_stack.batch_template(batch_stack.load_itfs(["exi"], ok))["Resources"]["ExiJobRole"]
    folder = _configs(tmp_path / "4", emr=lambda r: r.pop("batch"))
    assert "EmrJobRole" not in batch_stack.batch_template(batch_stack.load_itfs(None, folder))["Resources"]
    with pytest.raises(ConfigError, match=r"emirs.yaml(.|\n)*processing.runner.batch: missing"):
        batch_stack.load_itfs(["emr"], folder)


def test_sdc_batch_template_command(tmp_path: Path, template: dict[str, Any]) -> None:
    from emm_dev import cli

    out = tmp_path / "stack.yaml"
    assert cli.main(["batch-template", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == json.loads(json.dumps(template))
    assert cli.main(["batch-template", "--instrument", "emr", "--out", str(tmp_path / "emr.json")]) == 0
    emr = json.loads((tmp_path / "emr.json").read_text())
    assert {r["Properties"]["JobDefinitionName"] for r in emr["Resources"].values()
            if r["Type"] == "AWS::Batch::JobDefinition"} == {"emm-emr-production", "emm-emr-staging"}


def test_runner_config_of_every_yaml_is_what_the_definitions_carry(template: dict[str, Any]) -> None:
    """Every job definition's image/resources/timeout come from its YAML's runner section."""
    for file, inst in (("exi.yaml", "exi"), ("emus.yaml", "emu"), ("emirs.yaml", "emr")):
        runner: RunnerConfig = load_config(config_dir() / file).processing.runner
        props = template["Resources"][f"{inst.capitalize()}ProductionJobDefinition"]["Properties"]
        assert props["ContainerProperties"]["Image"] == runner.image
        assert props["Timeout"] == {"AttemptDurationSeconds": runner.timeout_minutes * 60}
        assert {r["Type"]: r["Value"] for r in props["ContainerProperties"]["ResourceRequirements"]} == {
            "VCPU": f"{runner.cpus:g}", "MEMORY": str(runner.memory_mb)}
