"""AWS Batch as code: a CloudFormation template generated from the ITF YAMLs' runner sections.

    python -m emm_sdc.deploy.batch_stack [--instrument exi ...] [--out stack.json|stack.yaml]
    ./sdc batch-template ...                                     (the same, from a checkout)

What it makes (docs/aws_batch.md):

* two managed EC2 compute environments: ``emm-sdc-daily`` (daily work only) and ``emm-sdc-reprocessing``
  (reprocessing, and daily work when it has room); their default sizes follow the YAMLs' Airflow pools;
* every job queue the YAMLs name, per lane: daily queues have priority 100 and the daily environment first,
  reprocessing queues priority 1 and only the reprocessing environment, so a campaign never takes the daily
  capacity and, where the two share the reprocessing environment, daily jobs are placed first; each queue has
  a fair-share scheduling policy whose shares are the instruments (``runners/batch.py`` submits with the
  instrument as share identifier on such queues), so one instrument's campaign cannot starve another's;
* per ITF the job definitions ``runners/batch.py`` looks up (``emm-<inst>-production``, ``emm-<inst>-staging``)
  with the YAML's image, command, vCPUs, memory, environment and timeout, a retry strategy for lost hosts
  only (the processor's own failures are Airflow's to retry), its job role and the execution role;
* per ITF a job role that may read only its jobs' staging prefixes and the SPICE kernels and write only its
  jobs' outputs and logs; the execution role (image pull, logs); the Batch service and instance roles.

The module lives in the package (not in devtools) because it derives every name from the runtime's own
constants -- job definition names, the staging root, the SPICE root, the command -- so the stack and what
the batch runner submits cannot drift apart; it needs no Airflow at run time beyond importing them.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from emm_sdc.core.config import CONFIG_FILES, ConfigError, ItfConfig, config_dir, load_config
from emm_sdc.core.kernels import SPICE_ROOT
from emm_sdc.core.naming import WORK_ROOT
from emm_sdc.runners.batch import container_properties, job_definition_name

LANES = ("daily", "reprocessing")
#: Queue priorities: higher is placed first where queues share a compute environment.
PRIORITY = {"daily": 100, "reprocessing": 1}
#: Fair share: the percentage of a queue's maximum vCPUs held back for instruments not yet active
#: (the held share is ``(reservation/100) ** active instruments``), and how long past usage counts.
COMPUTE_RESERVATION = {"daily": 25, "reprocessing": 50}
SHARE_DECAY_SECONDS = 3600
COMPUTE_ENVIRONMENTS = {"daily": "emm-sdc-daily", "reprocessing": "emm-sdc-reprocessing"}
ENVIRONMENT_LOGICAL = {"daily": "DailyComputeEnvironment", "reprocessing": "ReprocessingComputeEnvironment"}
SERVICE_ROLE = "emm-sdc-batch-service"
INSTANCE_ROLE = "emm-sdc-batch-instance"
EXECUTION_ROLE = "emm-sdc-batch-execution"
LOG_GROUP = "/aws/batch/job"
#: Batch retries a job itself only when its host went away (e.g. a Spot or scale-in reclaim); any other
#: failure ends the attempt and the SDC task decides (Airflow retries, failure records, alerts).
RETRY_STRATEGY = {"Attempts": 3, "EvaluateOnExit": [{"OnStatusReason": "Host EC2*", "Action": "RETRY"},
                                                    {"OnReason": "*", "Action": "EXIT"}]}
_ECR = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
                  r"(?P<repo>[^:@]+)")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@/-]*/)?(?P<name>[\w+=,.@-]+)$")


def job_role_name(instrument: str) -> str:
    """The IAM role an ITF's Batch jobs run as."""
    return f"emm-sdc-{instrument}-batch-job"


def staging_pattern(instrument: str) -> str:
    """The staging prefixes of one instrument's jobs: ``emm/work/<job id>/``, the job id starting with its DAG id.

    Every DAG that runs an ITF's jobs is ``emm_<inst>_...`` (process, reprocess, staging check), and
    ``lifecycle``/``staging`` build job ids as ``<dag id>__<run id>__...``.
    """
    return f"{WORK_ROOT}/emm_{instrument}_*"


def job_role_grants(instrument: str) -> dict[str, list[str]]:
    """What an ITF's job role may do, as S3 key patterns in the archive bucket.

    ``read``: its staged manifest, inputs and calibration (``stage_inputs`` copies them under the job's prefix,
    so the archive's data prefixes are never read by a job) and the SPICE kernels and meta-kernels
    (``emmref/stage.py`` fetches the meta-kernel and what it loads from ``emm/spice/``). ``write``: the job's
    outputs (``out/``) and ``job.log`` -- not its inputs or manifest.
    """
    work = staging_pattern(instrument)
    return {"read": [f"{work}/*", f"{SPICE_ROOT}/*"], "write": [f"{work}/out/*", f"{work}/job.log"]}


def _s3(pattern: str) -> dict[str, str]:
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{ArchiveBucket}}/{pattern}"}


def _trust(service: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


def job_role_policy(instrument: str) -> dict[str, Any]:
    """The job role's only policy (CloudFormation form: the bucket is the ``ArchiveBucket`` parameter)."""
    grants = job_role_grants(instrument)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadStagedInputsAndKernels", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [_s3(p) for p in grants["read"]]},
        {"Sid": "WriteOutputsAndLog", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": [_s3(p) for p in grants["write"]]},
    ]}


@dataclass(frozen=True)
class Itf:
    """One ITF YAML that runs (or may run) on Batch."""

    path: Path
    config: ItfConfig

    @property
    def instrument(self) -> str:
        return self.config.instrument

    @property
    def logical(self) -> str:
        return self.instrument.capitalize()


def load_itfs(instruments: Sequence[str] | None = None, directory: Path | None = None) -> list[Itf]:
    """The ITF YAMLs to generate from: the named instruments (each must have a ``batch`` section), or every
    config in ``directory`` (default: the config folder) that has one."""
    folder = directory or config_dir()
    wanted = list(instruments) if instruments else list(CONFIG_FILES)
    out: list[Itf] = []
    for inst in wanted:
        if inst not in CONFIG_FILES:
            raise ValueError(f"unknown instrument {inst!r}; expected one of {sorted(CONFIG_FILES)}")
        path = folder / CONFIG_FILES[inst]
        if not instruments and not path.exists():
            continue
        cfg = load_config(path)
        runner = cfg.processing.runner
        if runner.batch is None or runner.image is None:
            if instruments:
                raise ConfigError(path, [("processing.runner.batch", "missing: the Batch stack needs the image and "
                                                                     "job_queues (daily, reprocessing)")])
            continue
        out.append(Itf(path, cfg))
    if not out:
        raise ValueError(f"no ITF YAML in {folder} has a processing.runner.batch section")
    return out


def _queues(itfs: Sequence[Itf]) -> dict[str, str]:
    """Queue name -> lane, over every YAML; a queue serves one lane."""
    lanes: dict[str, tuple[str, Itf]] = {}
    for itf in itfs:
        assert itf.config.processing.runner.batch is not None
        for lane, name in sorted(itf.config.processing.runner.batch.job_queues.items()):
            seen = lanes.get(name)
            if seen and seen[0] != lane:
                raise ConfigError(itf.path, [(f"processing.runner.batch.job_queues.{lane}",
                                              f"{name!r} is the {seen[0]} queue of {seen[1].path.name}; "
                                              f"a queue serves one lane")])
            lanes.setdefault(name, (lane, itf))
    return {name: lane for name, (lane, _) in lanes.items()}


def _check_role(itf: Itf) -> None:
    batch = itf.config.processing.runner.batch
    assert batch is not None
    if batch.job_role_arn is None:
        return
    m = _ROLE_ARN.match(batch.job_role_arn)
    if not m or m.group("name") != job_role_name(itf.instrument):
        raise ConfigError(itf.path, [("processing.runner.batch.job_role_arn",
                                      f"{batch.job_role_arn!r} is not the stack's job role for {itf.instrument}: "
                                      f"set it to the stack output {itf.logical}JobRoleArn "
                                      f"(role {job_role_name(itf.instrument)}) or remove it")])


def _logical(text: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def _pascal(value: Any) -> Any:
    """The Batch API's camelCase keys as CloudFormation's PascalCase (recursively)."""
    if isinstance(value, dict):
        return {k[:1].upper() + k[1:]: _pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pascal(v) for v in value]
    return value


def _ecr_repositories(itfs: Sequence[Itf]) -> list[dict[str, str]]:
    arns: set[str] = set()
    for itf in itfs:
        runner = itf.config.processing.runner
        for image in (runner.image, runner.staging_image):
            m = _ECR.match(image or "")
            if m:
                arns.add(f"arn:${{AWS::Partition}}:ecr:{m['region']}:{m['account']}:repository/{m['repo']}")
    return [{"Fn::Sub": a} for a in sorted(arns)]


def _execution_policy(itfs: Sequence[Itf]) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [
        {"Sid": "JobLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [{"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
                                  f"{LOG_GROUP}:*"}]},
    ]
    repos = _ecr_repositories(itfs)
    if repos:
        statements += [
            # ECR's token call has no resource to scope it to; the pulls are limited to the ITF repositories.
            {"Sid": "EcrToken", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
            {"Sid": "PullItfImages", "Effect": "Allow",
             "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
             "Resource": repos},
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def _capacity(itfs: Sequence[Itf], lane: str) -> int:
    """vCPUs the lane's Airflow pools can keep busy at once (each ITF: pool slots x job vCPUs), at least one job."""
    total = sum(math.ceil(getattr(i.config.airflow.pools, lane) * i.config.processing.runner.cpus) for i in itfs)
    return max(total, _largest_job(itfs))


def _largest_job(itfs: Sequence[Itf]) -> int:
    return max(math.ceil(i.config.processing.runner.cpus) for i in itfs)


def _job_definition(itf: Itf, environment: str, image: str) -> dict[str, Any]:
    runner = itf.config.processing.runner
    props = _pascal(container_properties(runner, image, None))
    props["JobRoleArn"] = {"Fn::GetAtt": [f"{itf.logical}JobRole", "Arn"]}
    props["ExecutionRoleArn"] = {"Fn::GetAtt": ["ExecutionRole", "Arn"]}
    return {"Type": "AWS::Batch::JobDefinition", "Properties": {
        "JobDefinitionName": job_definition_name(itf.instrument, environment),
        "Type": "container",
        "PlatformCapabilities": ["EC2"],
        "PropagateTags": True,
        "ContainerProperties": props,
        "Timeout": {"AttemptDurationSeconds": runner.timeout_minutes * 60},
        "RetryStrategy": RETRY_STRATEGY,
        "Tags": {"emm:instrument": itf.instrument, "emm:environment": environment},
    }}


def batch_template(itfs: Sequence[Itf]) -> dict[str, Any]:
    """The CloudFormation template (a JSON-able dict) for these ITFs."""
    queues = _queues(itfs)
    for itf in itfs:
        _check_role(itf)
    instruments = [i.instrument for i in itfs]
    resources: dict[str, Any] = {
        "BatchServiceRole": {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": SERVICE_ROLE, "AssumeRolePolicyDocument": _trust("batch.amazonaws.com"),
            "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                                              "AWSBatchServiceRole"}],
        }},
        "InstanceRole": {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": INSTANCE_ROLE, "AssumeRolePolicyDocument": _trust("ec2.amazonaws.com"),
            "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                                              "AmazonEC2ContainerServiceforEC2Role"}],
        }},
        "InstanceProfile": {"Type": "AWS::IAM::InstanceProfile", "Properties": {
            "InstanceProfileName": INSTANCE_ROLE, "Roles": [{"Ref": "InstanceRole"}]}},
        "ExecutionRole": {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": EXECUTION_ROLE, "AssumeRolePolicyDocument": _trust("ecs-tasks.amazonaws.com"),
            "Policies": [{"PolicyName": "pull-images-and-write-logs", "PolicyDocument": _execution_policy(itfs)}],
        }},
    }
    for lane in LANES:
        resources[ENVIRONMENT_LOGICAL[lane]] = {"Type": "AWS::Batch::ComputeEnvironment", "Properties": {
            "ComputeEnvironmentName": COMPUTE_ENVIRONMENTS[lane], "Type": "MANAGED", "State": "ENABLED",
            "ServiceRole": {"Fn::GetAtt": ["BatchServiceRole", "Arn"]},
            "ComputeResources": {
                "Type": "EC2", "AllocationStrategy": "BEST_FIT_PROGRESSIVE", "MinvCpus": 0,
                "MaxvCpus": {"Ref": f"{lane.capitalize()}MaxVcpus"}, "InstanceTypes": {"Ref": "InstanceTypes"},
                "Subnets": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
                "InstanceRole": {"Fn::GetAtt": ["InstanceProfile", "Arn"]},
                "Tags": {"emm:lane": lane},
            },
        }}
    for name, lane in sorted(queues.items()):
        policy = f"{_logical(name)}FairShare"
        resources[policy] = {"Type": "AWS::Batch::SchedulingPolicy", "Properties": {
            "Name": f"{name}-fair-share",
            "FairsharePolicy": {
                "ShareDecaySeconds": SHARE_DECAY_SECONDS, "ComputeReservation": COMPUTE_RESERVATION[lane],
                "ShareDistribution": [{"ShareIdentifier": inst, "WeightFactor": 1.0} for inst in instruments],
            },
            "Tags": {"emm:lane": lane},
        }}
        order = ["daily", "reprocessing"] if lane == "daily" else ["reprocessing"]
        resources[f"{_logical(name)}Queue"] = {"Type": "AWS::Batch::JobQueue", "Properties": {
            "JobQueueName": name, "State": "ENABLED", "Priority": PRIORITY[lane],
            "ComputeEnvironmentOrder": [{"Order": n, "ComputeEnvironment": {"Ref": ENVIRONMENT_LOGICAL[env]}}
                                        for n, env in enumerate(order, 1)],
            "SchedulingPolicyArn": {"Ref": policy},
            "Tags": {"emm:lane": lane},
        }}
    outputs: dict[str, Any] = {}
    for itf in itfs:
        runner = itf.config.processing.runner
        assert runner.image is not None
        resources[f"{itf.logical}JobRole"] = {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": job_role_name(itf.instrument), "AssumeRolePolicyDocument": _trust("ecs-tasks.amazonaws.com"),
            "Policies": [{"PolicyName": "staged-inputs-and-outputs",
                          "PolicyDocument": job_role_policy(itf.instrument)}],
            "Tags": [{"Key": "emm:instrument", "Value": itf.instrument}],
        }}
        resources[f"{itf.logical}ProductionJobDefinition"] = _job_definition(itf, "production", runner.image)
        resources[f"{itf.logical}StagingJobDefinition"] = _job_definition(itf, "staging",
                                                                          runner.staging_image or runner.image)
        outputs[f"{itf.logical}JobRoleArn"] = {
            "Description": f"processing.runner.batch.job_role_arn of {itf.path.name} (optional)",
            "Value": {"Fn::GetAtt": [f"{itf.logical}JobRole", "Arn"]}}
    for name in sorted(queues):
        outputs[f"{_logical(name)}QueueArn"] = {"Value": {"Ref": f"{_logical(name)}Queue"}}
    sources = ", ".join(i.path.name for i in itfs)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"EMM SDC AWS Batch: compute, queues, job definitions and roles, generated from {sources} "
                       "by emm_sdc.deploy.batch_stack (docs/aws_batch.md); regenerate rather than edit",
        "Parameters": {
            "ArchiveBucket": {"Type": "String", "Default": "emm-sdc-archive",
                              "AllowedPattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                              "Description": "the archive bucket (EMM_ARCHIVE_BUCKET): Batch staging and kernels"},
            "SubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>",
                          "Description": "subnets of the compute environments (with a route to S3)"},
            "SecurityGroupIds": {"Type": "List<AWS::EC2::SecurityGroup::Id>",
                                 "Description": "security groups of the instances (egress to S3 and ECR)"},
            "InstanceTypes": {"Type": "CommaDelimitedList", "Default": "optimal"},
            "DailyMaxVcpus": {"Type": "Number", "Default": _capacity(itfs, "daily"), "MinValue": _largest_job(itfs),
                              "Description": "daily compute environment size (default: the daily pools' slots x "
                                             "job vCPUs)"},
            "ReprocessingMaxVcpus": {"Type": "Number", "Default": _capacity(itfs, "reprocessing"),
                                     "MinValue": _largest_job(itfs),
                                     "Description": "reprocessing compute environment size (default: the "
                                                    "reprocessing pools' slots x job vCPUs)"},
        },
        "Resources": resources,
        "Outputs": outputs,
    }


def render(template: dict[str, Any], fmt: str) -> str:
    """The template as ``json`` or ``yaml`` text."""
    if fmt == "yaml":  # through JSON: shared sub-dicts would become YAML aliases, which CloudFormation rejects
        return yaml.safe_dump(json.loads(json.dumps(template)), sort_keys=False, width=120)
    return json.dumps(template, indent=2) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instrument", action="append", choices=sorted(CONFIG_FILES),
                        help="only this ITF (repeatable; default: every YAML with a processing.runner.batch section)")
    parser.add_argument("--config-dir", type=Path, help="the ITF YAMLs' folder (default: EMM_CONFIG_DIR or "
                                                        "include/itf_configs)")
    parser.add_argument("--out", type=Path, help="write here (.yaml/.yml: YAML, else JSON) instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Generate the template from ``args`` (see :func:`add_arguments`); errors name the file and field."""
    try:
        template = batch_template(load_itfs(args.instrument, args.config_dir))
    except (ConfigError, ValueError) as exc:
        print(f"batch template: {exc}", file=sys.stderr)
        return 1
    fmt = "yaml" if args.out and args.out.suffix in (".yaml", ".yml") else "json"
    text = render(template, fmt)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out} ({len(template['Resources'])} resources); deploy with docs/aws_batch.md",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emm_sdc.deploy.batch_stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
