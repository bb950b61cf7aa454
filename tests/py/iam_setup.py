"""Sets up IAM on a moto_iam.py server: one user per role with its policy from
deploy/iam/, rendered for the bucket and prefix, plus an admin for the parts
of a test that stand in for an operator. Prints each role's access key as JSON.

usage: python3 iam_setup.py ENDPOINT BUCKET PREFIX POLICY_DIR

The server must be started with INITIAL_NO_AUTH_ACTION_COUNT=3: the admin's
CreateUser, PutUserPolicy and CreateAccessKey are the only unauthenticated
actions; everything after them, this script's included, is authorised.
"""

import json
import pathlib
import sys

import boto3

endpoint, bucket, prefix, policy_dir = sys.argv[1:5]


def client(service, key=None):
    creds = key or {"AccessKeyId": "bootstrap", "SecretAccessKey": "bootstrap"}
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
    )


def user(iam, name, policy):
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=policy)
    return iam.create_access_key(UserName=name)["AccessKey"]


everything = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
admin = user(client("iam"), "admin", everything)
iam = client("iam", admin)
client("s3", admin).create_bucket(Bucket=bucket)
keys = {"admin": admin}
for path in sorted(pathlib.Path(policy_dir).glob("sqi-*.json")):
    role = path.stem.removeprefix("sqi-")
    policy = path.read_text().replace("${bucket}", bucket).replace("${prefix}", prefix)
    keys[role] = user(iam, f"sqi-{role}", policy)
print(
    json.dumps(
        {
            role: {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
            for role, key in keys.items()
        }
    )
)
