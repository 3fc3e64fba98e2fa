"""The region stack's template, checked as JSON: above all what the emulator stores but ignores
(IMDSv2, shutdown behaviour, DNS hostnames, public access block, the launch template's profile)."""

from __future__ import annotations

import json

import pytest

from annex_cloud.nodes import node_role_path
from templates import contract
from templates.settings import StackSettings
from templates.stack import BROKER_HANDLER, ENFORCER_HANDLER, build_template, subnet_cidrs

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
SETTINGS_CODE_KEY = "functions/annex_cloud-0123456789abcdef0123.zip"


def render(**overrides) -> dict:
    settings = dict(
        region="us-east-1",
        image_id="ami-0123456789abcdef0",
        availability_zones=ZONES,
        code_key=SETTINGS_CODE_KEY,
    )
    settings.update(overrides)
    return json.loads(build_template(StackSettings(**settings)).to_json())


def of_type(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_vpc_has_dns_hostnames_and_support():
    (vpc,) = of_type(render(), "AWS::EC2::VPC").values()
    assert vpc["Properties"]["EnableDnsHostnames"] is True
    assert vpc["Properties"]["EnableDnsSupport"] is True


def test_one_public_subnet_per_zone_with_distinct_cidrs():
    subnets = of_type(render(), "AWS::EC2::Subnet")
    assert sorted(s["Properties"]["AvailabilityZone"] for s in subnets.values()) == list(ZONES)
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is True for s in subnets.values())
    cidrs = [s["Properties"]["CidrBlock"] for s in subnets.values()]
    assert len(set(cidrs)) == len(cidrs)
    associations = of_type(render(), "AWS::EC2::SubnetRouteTableAssociation")
    assert len(associations) == len(ZONES)


def test_default_route_goes_through_the_internet_gateway():
    (route,) = of_type(render(), "AWS::EC2::Route").values()
    assert route["Properties"]["DestinationCidrBlock"] == "0.0.0.0/0"
    assert route["Properties"]["GatewayId"] == {"Ref": "InternetGateway"}
    assert route["DependsOn"] == "GatewayAttachment"


def test_security_group_has_no_inbound_rule_unless_ssh_cidr_given():
    (closed,) = of_type(render(), "AWS::EC2::SecurityGroup").values()
    assert closed["Properties"]["SecurityGroupIngress"] == []
    (open_ssh,) = of_type(render(ssh_cidr="203.0.113.0/24"), "AWS::EC2::SecurityGroup").values()
    (rule,) = open_ssh["Properties"]["SecurityGroupIngress"]
    assert (rule["FromPort"], rule["ToPort"], rule["CidrIp"]) == (22, 22, "203.0.113.0/24")


@pytest.mark.parametrize("types", [("m7i.large",), ("m7i.large", "c6i.xlarge", "m5.large")])
def test_one_launch_template_per_type_with_the_guarded_settings(types):
    template = render(instance_types=types)
    lts = of_type(template, "AWS::EC2::LaunchTemplate")
    assert len(lts) == len(types)
    seen_types = set()
    for lt in lts.values():
        data = lt["Properties"]["LaunchTemplateData"]
        seen_types.add(data["InstanceType"])
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        assert data["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
        assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
        assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
        assert "IamInstanceProfile" not in data  # each project's version of the template adds its own
        assert data["ImageId"] == "ami-0123456789abcdef0"
        assert data["KeyName"] == f"{contract.DEFAULT_STACK_NAME}-annex"
        assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
        user_data = json.dumps(data["UserData"])
        assert "ANNEX_BUCKET" in user_data and {"Ref": "ConfigBucket"} == data["UserData"]["Fn::Base64"]["Fn::Join"][1][1]
    assert seen_types == set(types)


def test_user_data_carries_no_secret_material():
    """User data is readable by anyone who can describe the instance: no keys, tokens or passwords."""
    for lt in of_type(render(), "AWS::EC2::LaunchTemplate").values():
        text = json.dumps(lt["Properties"]["LaunchTemplateData"]["UserData"])
        for marker in ("SecretAccessKey", "-----BEGIN", "eyJhbGciOi", "aws_secret_access_key"):
            assert marker not in text


def test_bucket_is_encrypted_private_and_expiring():
    (bucket,) = of_type(render(), "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    (lifecycle,) = props["LifecycleConfiguration"]["Rules"]
    assert lifecycle["Status"] == "Enabled" and lifecycle["ExpirationInDays"] > 0


def test_no_role_is_shared_by_every_projects_nodes():
    """Node roles are per project, made by issue-credentials (annex_admin.nodes): the stack has
    no instance profile, and its outputs name the path the broker may pass node roles from."""
    template = render()
    assert of_type(template, "AWS::IAM::InstanceProfile") == {}
    trusted = [
        r for r in of_type(template, "AWS::IAM::Role").values()
        if "ec2.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    assert trusted == []
    path = template["Outputs"][contract.OUT_NODE_ROLE_PATH]["Value"]
    assert path == node_role_path(contract.DEFAULT_STACK_NAME, "us-east-1")
    (broker_role,) = [r for r in of_type(template, "AWS::IAM::Role").values()
                      if r["Properties"]["Policies"][0]["PolicyName"] == "BrokerActions"]
    statements = {st["Sid"]: st for st in broker_role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}
    assert statements["PassOnlyNodeRoles"]["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role" + path + "*"}]


def functions(template):
    return {f["Properties"]["Handler"]: f for f in of_type(template, "AWS::Lambda::Function").values()}


def test_both_functions_run_the_one_deployed_zip():
    template = render()
    found = functions(template)
    assert set(found) == {BROKER_HANDLER, ENFORCER_HANDLER}
    codes = [f["Properties"]["Code"] for f in found.values()]
    assert codes[0] == codes[1]
    assert codes[0]["S3Key"] == SETTINGS_CODE_KEY
    assert "${AWS::AccountId}" in codes[0]["S3Bucket"]["Fn::Sub"]
    for function in found.values():
        assert "ZipFile" not in function["Properties"]["Code"]
        assert "ANNEX_PRICES" not in function["Properties"]["Environment"]["Variables"]


def test_enforcer_runs_at_most_every_five_minutes():
    template = render()
    (rule,) = [r for r in of_type(template, "AWS::Events::Rule").values() if "ScheduleExpression" in r["Properties"]]
    expression = rule["Properties"]["ScheduleExpression"]
    amount, unit = expression[len("rate(") : -1].split()
    assert unit.startswith("minute") and int(amount) <= 5
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["EnforcerFunction", "Arn"]}



def test_the_schedule_may_invoke_the_enforcer():
    template = render()
    permission = template["Resources"]["EnforcerSchedulePermission"]
    assert permission["Properties"]["Principal"] == "events.amazonaws.com"
    assert permission["Properties"]["SourceArn"] == {"Fn::GetAtt": ["EnforcerSchedule", "Arn"]}

def test_the_broker_is_named_by_the_stack_and_fixed_by_it():
    broker = functions(render())[BROKER_HANDLER]["Properties"]
    assert broker["FunctionName"] == contract.broker_function_name(contract.DEFAULT_STACK_NAME)
    variables = broker["Environment"]["Variables"]
    assert set(variables) == {"ANNEX_STACK_NAME", "ANNEX_BUCKET", "ANNEX_REGISTRY_TABLE", "ANNEX_SUBNETS", "ANNEX_LAUNCH_TEMPLATES"}


def test_registry_table_keys_ttl_and_encryption():
    (table,) = of_type(render(), "AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert [k["AttributeName"] for k in props["KeySchema"]] == ["pk", "sk"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_scientist_policy_only_invokes_the_broker():
    (policy,) = of_type(render(), "AWS::IAM::ManagedPolicy").values()
    assert policy["Properties"]["Path"] == contract.USER_PATH
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["lambda:InvokeFunction"]
    assert statement["Resource"] == [{"Fn::GetAtt": ["BrokerFunction", "Arn"]}]


def test_broker_and_code_names_fit_aws_limits():
    long_stack = "S" * 100
    assert len(contract.broker_function_name(long_stack)) <= 64
    assert contract.broker_function_name("HTCondorAnnex") == "HTCondorAnnex-broker"
    bucket = contract.artifact_bucket_name(long_stack, "123456789012", "ap-southeast-2")
    assert len(bucket) <= 63 and bucket == bucket.lower()


def test_every_output_the_tools_need_is_declared():
    assert set(render()["Outputs"]) == set(contract.REQUIRED_OUTPUTS)


def test_building_needs_resolved_zones_and_image():
    with pytest.raises(ValueError):
        build_template(StackSettings(region="us-east-1", image_id="ami-0123456789abcdef0"))
    with pytest.raises(ValueError):
        build_template(StackSettings(region="us-east-1", availability_zones=ZONES))


def test_subnet_cidrs_are_disjoint_slices_of_the_vpc():
    assert subnet_cidrs("10.73.0.0/16", 3) == ["10.73.0.0/20", "10.73.16.0/20", "10.73.32.0/20"]


def test_template_is_deterministic():
    assert render() == render()


# --- the enforcer's backstops -------------------------------------------------------------------


def test_enforcer_knows_its_stack_and_launch_templates():
    template = render(instance_types=("m7i.large", "m5.large"))
    variables = template["Resources"]["EnforcerFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["ANNEX_STACK_NAME"] == contract.DEFAULT_STACK_NAME
    assert variables["ANNEX_LAUNCH_TEMPLATES"] == {
        "Fn::Join": [",", [{"Ref": "LaunchTemplateM7iLarge"}, {"Ref": "LaunchTemplateM5Large"}]]
    }
    names = {lt["Properties"]["LaunchTemplateName"] for lt in of_type(template, "AWS::EC2::LaunchTemplate").values()}
    assert set(variables["ANNEX_LAUNCH_TEMPLATE_NAMES"].split(",")) == names


def test_launch_templates_tag_volumes_with_the_stack_and_nothing_else():
    for lt in of_type(render(), "AWS::EC2::LaunchTemplate").values():
        specs = lt["Properties"]["LaunchTemplateData"]["TagSpecifications"]
        # Only volumes: a spot-instances-request tag would make EC2 refuse every on-demand launch,
        # and instance tags come from the launch request (tag-on-create).
        assert specs == [
            {"ResourceType": "volume", "Tags": [{"Key": contract.TAG_STACK, "Value": contract.DEFAULT_STACK_NAME}]}
        ]


def test_state_change_rule_hands_starting_instances_to_the_enforcer():
    template = render()
    rule = template["Resources"]["EnforcerStateChangeRule"]["Properties"]
    assert rule["State"] == "ENABLED"
    assert rule["EventPattern"] == {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["pending", "running"]},
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["EnforcerFunction", "Arn"]}
    permission = template["Resources"]["EnforcerStateChangePermission"]["Properties"]
    assert permission["FunctionName"] == {"Ref": "EnforcerFunction"}
    assert permission["SourceArn"] == {"Fn::GetAtt": ["EnforcerStateChangeRule", "Arn"]}
    assert permission["Principal"] == "events.amazonaws.com"


def test_alarms_notify_the_topic_on_errors_unended_instances_and_a_missing_heartbeat():
    template = render()
    alarms = {k: v["Properties"] for k, v in of_type(template, "AWS::CloudWatch::Alarm").items()}
    assert set(alarms) == {
        "EnforcerFunctionErrorsAlarm", "EnforcerSweepErrorsAlarm", "EnforcerCouldNotEndAlarm", "EnforcerHeartbeatAlarm"
    }
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": "EnforcerAlarmTopic"}]
        assert alarm["Statistic"] == "Sum" and alarm["Period"] == 300
    function = alarms["EnforcerFunctionErrorsAlarm"]
    assert (function["Namespace"], function["MetricName"]) == ("AWS/Lambda", "Errors")
    assert function["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "EnforcerFunction"}}]
    ours = [{"Name": "StackName", "Value": contract.DEFAULT_STACK_NAME}]
    unended = alarms["EnforcerCouldNotEndAlarm"]
    assert (unended["Namespace"], unended["MetricName"], unended["Dimensions"]) == ("CondorAnnex", "CouldNotEnd", ours)
    assert (unended["ComparisonOperator"], unended["Threshold"]) == ("GreaterThanThreshold", 0)
    heartbeat = alarms["EnforcerHeartbeatAlarm"]
    assert (heartbeat["MetricName"], heartbeat["Dimensions"]) == ("Heartbeat", ours)
    assert (heartbeat["ComparisonOperator"], heartbeat["Threshold"]) == ("LessThanThreshold", 1)
    # No heartbeat for 15 minutes is an outage, and no data at all counts as one.
    assert heartbeat["TreatMissingData"] == "breaching"
    assert heartbeat["Period"] * heartbeat["EvaluationPeriods"] == 15 * 60 == heartbeat["Period"] * heartbeat["DatapointsToAlarm"]


def test_notify_email_subscribes_only_when_given():
    assert of_type(render(), "AWS::SNS::Subscription") == {}
    (topic,) = of_type(render(), "AWS::SNS::Topic")
    (subscription,) = of_type(render(notify_email="admin@example.org"), "AWS::SNS::Subscription").values()
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": topic}, "Protocol": "email", "Endpoint": "admin@example.org"
    }


def test_enforcer_backstop_policy_reaches_only_annex_resources():
    template = render(instance_types=("m7i.large", "m5.large"))
    policy = template["Resources"]["EnforcerBackstopPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": "EnforcerRole"}]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    from_templates = statements["EndInstancesFromStackTemplates"]
    assert set(from_templates["Action"]) == {"ec2:TerminateInstances", "ec2:ModifyInstanceAttribute"}
    assert from_templates["Condition"] == {"StringEquals": {"aws:ResourceTag/aws:ec2launchtemplate:id": [
        {"Ref": "LaunchTemplateM7iLarge"}, {"Ref": "LaunchTemplateM5Large"}]}}
    protected = statements["ClearProtectionOfAnnexInstances"]
    assert protected["Action"] == ["ec2:ModifyInstanceAttribute"]
    assert protected["Condition"] == {"Null": {"aws:ResourceTag/" + contract.TAG_ANNEX_NAME: "false"}}
    assert statements["RemoveStackLeftovers"]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/" + contract.TAG_STACK: contract.DEFAULT_STACK_NAME}
    }
    assert statements["PublishEnforcerMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "CondorAnnex"}}
    assert statements["DeleteStackFleets"]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/" + contract.TAG_STACK: contract.DEFAULT_STACK_NAME}
    }
    # Every write is conditioned on the resource being an annex's or the stack's.
    unconditioned_writes = [
        sid for sid, s in statements.items()
        if "Condition" not in s and not all(a.split(":")[1].startswith("Describe") for a in s["Action"])
    ]
    assert unconditioned_writes == []


def _policy_documents(template: dict) -> list[tuple[str, dict]]:
    """Every IAM policy document the stack creates: roles' inline policies, policies, managed policies."""
    found = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            found += [(f"{name}/{p['PolicyName']}", p["PolicyDocument"]) for p in props.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            found.append((name, props["PolicyDocument"]))
    return found


READ_PREFIXES = ("Describe", "Get", "List")


def test_no_write_is_allowed_on_every_resource_without_a_condition():
    """checkov's CKV_AWS_111, checked here on every document: an Allow of any write action on "*"
    names the condition that narrows it (a fleet's stack tag, an annex's tag, a region)."""
    documents = _policy_documents(render())
    assert len(documents) >= 4
    loose = [
        (name, statement.get("Sid"))
        for name, document in documents
        for statement in document["Statement"]
        if statement["Effect"] == "Allow" and "Condition" not in statement
        and "*" in (statement.get("Resource") if isinstance(statement.get("Resource"), list) else [statement.get("Resource")])
        and not all(action.split(":", 1)[1].startswith(READ_PREFIXES)
                    for action in (statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]))
    ]
    assert loose == []


def test_reserved_concurrency_is_set_only_where_the_account_can_spare_it():
    both = functions(render(enforcer_concurrency=10, broker_concurrency=20))
    assert {name: f["Properties"].get("ReservedConcurrentExecutions") for name, f in both.items()} == {
        BROKER_HANDLER: 20, ENFORCER_HANDLER: 10}
    neither = functions(render())
    assert all("ReservedConcurrentExecutions" not in f["Properties"] for f in neither.values())
