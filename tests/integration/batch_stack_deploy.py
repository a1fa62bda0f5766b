"""Deploy the generated Batch stack into moto's CloudFormation (the test server on loopback).

Each deployment gets its own moto account (``x-moto-account-id``), so the stack's fixed names (roles,
compute environments, ``emm-<inst>-production``) never meet another test's resources on the shared server.

moto's CloudFormation creates the roles, instance profile, compute environments, queues and job
definitions, but it has no ``AWS::Batch::SchedulingPolicy``, ignores a queue's ``SchedulingPolicyArn``,
and drops a job definition's ``Timeout`` and ``PlatformCapabilities``. :func:`deploy` creates exactly those
through the Batch API from the same generated resources and lists them in ``Deployed.gaps``.
(Attaching a policy to an existing queue is a moto-only shortcut: AWS sets it when the queue is created.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import boto3

REGION = "us-east-1"
STACK = "emm-sdc-batch"


def account_client(endpoint: str, service: str, account: str) -> Any:
    """A boto3 client of the moto server acting in ``account``."""
    client = boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id="embedded", aws_secret_access_key="embedded")

    def _account(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account

    client.meta.events.register("before-sign", _account)
    return client


def to_api(value: Any, resolve: dict[str, str], key: str = "") -> Any:
    """A resource's CloudFormation properties as Batch API parameters (camelCase; GetAtt ... Arn resolved)."""
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            return resolve[value["Fn::GetAtt"][0]]
        if key == "Tags":
            return value
        return {k[:1].lower() + k[1:]: to_api(v, resolve, k) for k, v in value.items()}
    if isinstance(value, list):
        return [to_api(v, resolve, key) for v in value]
    return value


@dataclass
class Deployed:
    endpoint: str
    account: str
    template: dict[str, Any]
    status: str
    role_arns: dict[str, str]  # logical id -> ARN
    gaps: list[str] = field(default_factory=list)

    def client(self, service: str) -> Any:
        return account_client(self.endpoint, service, self.account)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r["Properties"] for k, r in self.template["Resources"].items() if r["Type"] == kind}


def deploy(endpoint: str, template: dict[str, Any], account: str, *, bucket: str) -> Deployed:
    """Create the stack (and what moto's CloudFormation leaves out) in a fresh moto account."""
    ec2 = account_client(endpoint, "ec2", account)
    vpc = ec2.create_vpc(CidrBlock="198.18.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="198.18.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="emm-batch", Description="batch", VpcId=vpc)["GroupId"]
    cfn = account_client(endpoint, "cloudformation", account)
    cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_NAMED_IAM"],
                     Parameters=[{"ParameterKey": "ArchiveBucket", "ParameterValue": bucket},
                                 {"ParameterKey": "SubnetIds", "ParameterValue": subnet},
                                 {"ParameterKey": "SecurityGroupIds", "ParameterValue": group},
                                 # given although it is the default: moto does not split a list parameter's default
                                 {"ParameterKey": "InstanceTypes", "ParameterValue": "optimal"}])
    [stack] = cfn.describe_stacks(StackName=STACK)["Stacks"]
    iam = account_client(endpoint, "iam", account)
    roles = {k: iam.get_role(RoleName=r["Properties"]["RoleName"])["Role"]["Arn"]
             for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    out = Deployed(endpoint, account, template, stack["StackStatus"], roles)
    _fill_gaps(out)
    return out


def _fill_gaps(d: Deployed) -> None:
    batch = d.client("batch")
    policies: dict[str, str] = {}
    arns = [p["arn"] for p in batch.list_scheduling_policies()["schedulingPolicies"]]
    have = ({p["name"]: p["arn"] for p in batch.describe_scheduling_policies(arns=arns)["schedulingPolicies"]}
            if arns else {})
    for logical, props in d.resources("AWS::Batch::SchedulingPolicy").items():
        if props["Name"] not in have:
            have[props["Name"]] = batch.create_scheduling_policy(
                name=props["Name"], fairsharePolicy=to_api(props["FairsharePolicy"], d.role_arns),
                tags=props["Tags"])["arn"]
            d.gaps.append(f"scheduling policy {props['Name']}")
        policies[logical] = have[props["Name"]]
    for props in d.resources("AWS::Batch::JobQueue").values():
        [queue] = batch.describe_job_queues(jobQueues=[props["JobQueueName"]])["jobQueues"]
        want = policies[props["SchedulingPolicyArn"]["Ref"]]
        if queue.get("schedulingPolicyArn") != want:
            batch.update_job_queue(jobQueue=props["JobQueueName"], schedulingPolicyArn=want)
            d.gaps.append(f"queue {props['JobQueueName']}: scheduling policy attached")
    for props in d.resources("AWS::Batch::JobDefinition").values():
        name = props["JobDefinitionName"]
        latest = max(batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"],
                     key=lambda j: j["revision"])
        api = to_api({k: v for k, v in props.items() if k != "JobDefinitionName"}, d.role_arns)
        if latest.get("timeout") != api["timeout"] or latest.get("platformCapabilities") != api["platformCapabilities"]:
            batch.register_job_definition(jobDefinitionName=name, **api)
            d.gaps.append(f"job definition {name}: re-registered with Timeout and PlatformCapabilities")
