"""AWS's reference MSK IAM signer, pinned to given credentials, region and time.

Reads a JSON list of cases on stdin, each
{"access_key", "secret_key", "session_token" (or null), "region",
 "unix_seconds", "user_agent"}, and prints one JSON object per case:
{"token", "expires_at_ms", "reference_user_agent"}.

The time is pinned by replacing botocore.auth's clock; the user agent by
replacing the signer's own (it embeds the signer's version, and it is the only
field that is not derived from the inputs: it sits after the signature and is
not signed). Everything else is the reference's own code path,
generate_auth_token_from_credentials_provider.
"""

import datetime
import json
import sys

import botocore.auth
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
from botocore.credentials import CredentialProvider, Credentials


class FixedCredentials(CredentialProvider):
    def __init__(self, access_key, secret_key, session_token):
        super().__init__()
        self.credentials = Credentials(access_key, secret_key, session_token)

    def load(self):
        return self.credentials


def pin_clock(unix_seconds):
    fixed = datetime.datetime.fromtimestamp(unix_seconds, datetime.timezone.utc)

    def get_current_datetime(remove_tzinfo=True):
        return fixed.replace(tzinfo=None) if remove_tzinfo else fixed

    # Fail loudly if a botocore release renames the clock we pin.
    assert hasattr(botocore.auth, "get_current_datetime"), "botocore.auth has no get_current_datetime"
    botocore.auth.get_current_datetime = get_current_datetime


def main():
    user_agent_hook = "__get_user_agent__"
    assert hasattr(MSKAuthTokenProvider, user_agent_hook), "the signer has no __get_user_agent__"
    reference_user_agent = getattr(MSKAuthTokenProvider, user_agent_hook)()
    results = []
    for case in json.load(sys.stdin):
        pin_clock(case["unix_seconds"])
        setattr(MSKAuthTokenProvider, user_agent_hook, lambda ua=case["user_agent"]: ua)
        provider = FixedCredentials(case["access_key"], case["secret_key"], case["session_token"])
        token, expires_at_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
            case["region"], provider
        )
        results.append(
            {
                "token": token,
                "expires_at_ms": expires_at_ms,
                "reference_user_agent": reference_user_agent,
            }
        )
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
