"""Uses a client generated from VoidRunner's OpenAPI document by openapi-python-client, as a
user of another language would: register, log in, submit a run that waits, read its output,
and get a refused run's error as the document's error model.

    python3 generated_client.py BASE_URL   (the generated package `voidrunner_client` on PYTHONPATH)
"""

import sys
import uuid

from voidrunner_client import AuthenticatedClient, Client
from voidrunner_client.api.auth import auth_login, auth_me, auth_register
from voidrunner_client.api.executions import execution_get
from voidrunner_client.api.runs import run_create
from voidrunner_client.models import (
    MeResponse,
    Credentials,
    ErrorBody,
    ExecutionResponse,
    RunRequest,
    RunRequestLanguage,
    Status,
    TokenResponse,
    UserResponse,
)


def expect(condition, what):
    if not condition:
        sys.exit(f"generated client: {what}")


base_url = sys.argv[1]
email = f"generated-{uuid.uuid4().hex[:12]}@example.com"
credentials = Credentials(email=email, password="a long enough password")

anonymous = Client(base_url=base_url, raise_on_unexpected_status=True, timeout=60)
registered = auth_register.sync_detailed(client=anonymous, body=credentials)
expect(registered.status_code == 201, f"register answered {registered.status_code}")
expect(isinstance(registered.parsed, UserResponse), f"register parsed {registered.parsed!r}")
expect(registered.parsed.email == email, "the registered email")

tokens = auth_login.sync(client=anonymous, body=credentials)
expect(isinstance(tokens, TokenResponse), f"login parsed {tokens!r}")
client = AuthenticatedClient(
    base_url=base_url, token=tokens.access_token, raise_on_unexpected_status=True, timeout=60
)
me = auth_me.sync(client=client)
expect(isinstance(me, MeResponse) and me.email == email, f"me: {me!r}")

program = "import sys\nname = sys.stdin.read().strip()\nprint(f'hello, {name}')\nsys.exit(3)\n"
run = run_create.sync_detailed(
    client=client,
    body=RunRequest(code=program, language=RunRequestLanguage.PYTHON, stdin="Ada\n"),
    wait=True,
    wait_seconds=30,
)
expect(run.status_code == 200, f"run answered {run.status_code}: {run.content!r}")
execution = run.parsed
expect(isinstance(execution, ExecutionResponse), f"run parsed {execution!r}")
expect(execution.status == Status.FAILED, f"status {execution.status}")
expect(execution.exit_code == 3, f"exit code {execution.exit_code}")
expect(execution.stdout == "hello, Ada\n", f"stdout {execution.stdout!r}")

again = execution_get.sync(client=client, execution_id=execution.id)
expect(isinstance(again, ExecutionResponse), f"get parsed {again!r}")
expect(again.id == execution.id and again.stdout == execution.stdout, "the same execution")

refused = run_create.sync_detailed(
    client=client,
    body=RunRequest(code="print(1)", language=RunRequestLanguage.PYTHON, timeout_seconds=0),
)
expect(refused.status_code == 422, f"a zero timeout answered {refused.status_code}")
expect(isinstance(refused.parsed, ErrorBody), f"refusal parsed {refused.parsed!r}")
expect(refused.parsed.error.code == "validation_failed", f"code {refused.parsed.error.code}")
expect("timeout_seconds" in refused.parsed.error.message, refused.parsed.error.message)

print(f"generated client: registered {email}, ran {execution.id}, refused with {refused.parsed.error.code}")
