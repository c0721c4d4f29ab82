"""Run by the e2b==2.31.0 interpreter (its own virtualenv): the v1 endpoints
(POST /sandboxes, POST /sandboxes/{id}/connect) with E2B_* variables pointing at the stack.
Prints one JSON line for the pytest side to check."""

import json
from importlib.metadata import version

from e2b import Sandbox, SandboxQuery

sbx = Sandbox.create(metadata={"client": "old-sdk"}, envs={"FROM": "old"})
run = sbx.commands.run("echo $FROM")
sbx.files.write("/tmp/old.txt", "old sdk")
again = Sandbox.connect(sbx.sandbox_id)
read = again.files.read("/tmp/old.txt")
listed = Sandbox.list(query=SandboxQuery(metadata={"client": "old-sdk"})).next_items()
killed = sbx.kill()
result = {
    "version": version("e2b"),
    "sandbox_id": sbx.sandbox_id,
    "stdout": run.stdout,
    "read": read,
    "listed": [s.sandbox_id for s in listed],
    "killed": killed,
    "running": sbx.is_running(),
}
print(json.dumps(result))
