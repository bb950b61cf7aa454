"""moto's S3 server with IAM enforced, for tests/tests/hostile/iam.rs.

usage: INITIAL_NO_AUTH_ACTION_COUNT=N python3 moto_iam.py -H 127.0.0.1 -p PORT

moto authorises every request against the caller's IAM policies once its first
N actions are done (INITIAL_NO_AUTH_ACTION_COUNT). Its SigV4 check, though,
re-canonicalises query strings differently from AWS and from botocore, so a
correctly signed ListObjectsV2 with `prefix=lake/...` fails with
SignatureDoesNotMatch. This wrapper skips only that comparison: the access key
still chooses the principal, an unknown key is still refused, and every action
is still checked against that principal's policies, which is what the test is
about.

It also authorises a DeleteObjects request the way AWS does, on each key
(`s3:DeleteObject` on `bucket/key`): moto asks for `s3:DeleteObject` on the
bucket itself, which no prefix-scoped policy grants. Here a batch is allowed
only when every key in it is.
"""

import sys

import xmltodict
from moto.iam import access_control
from moto.s3.responses import S3Response
from moto.server import main

access_control.IAMRequestBase.check_signature = lambda self: None

_authorize = S3Response._authenticate_and_authorize_s3_action


def _authorize_each_key(self, bucket_name=None, key_name=None):
    if key_name is None and self.data.get("Action") == "DeleteObject" and self.is_delete_keys():
        objects = xmltodict.parse(self.body).get("Delete", {}).get("Object", [])
        if not isinstance(objects, list):
            objects = [objects]
        for obj in objects:
            _authorize(self, bucket_name=bucket_name, key_name=obj["Key"])
        return
    _authorize(self, bucket_name=bucket_name, key_name=key_name)


S3Response._authenticate_and_authorize_s3_action = _authorize_each_key

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
