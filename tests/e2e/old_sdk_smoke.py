"""Run by the e2b==2.31.0 interpreter (its own virtualenv): the v1 endpoints
(POST /sandboxes, POST /sandboxes/{id}/connect) with E2B_* variables pointing at the stack,
and the filesystem calls openai-agents' E2B client makes first (this SDK never asks for gzip:
the proxy must not ask for it on its behalf). Prints one JSON line for the pytest side."""

import json
from importlib.metadata import version

from e2b import Sandbox, SandboxQuery

sbx = Sandbox.create(metadata={"client": "old-sdk"}, envs={"FROM": "old"})
run = sbx.commands.run("echo $FROM")
sbx.files.write("/tmp/old.txt", "old sdk")
again = Sandbox.connect(sbx.sandbox_id)
read = again.files.read("/tmp/old.txt")
again.files.make_dir("/home/user/workspace/sub")
stat = again.files.get_info("/home/user/workspace/sub")
again.files.write("/home/user/workspace/sub/a.txt", "a" * 4096)  # big enough to be worth compressing
moved = again.files.rename("/home/user/workspace/sub/a.txt", "/home/user/workspace/b.txt")
listing = sorted(entry.name for entry in again.files.list("/home/user/workspace"))
again.files.remove("/home/user/workspace/sub")
after_remove = sorted(entry.name for entry in again.files.list("/home/user/workspace"))
big_read = again.files.read("/home/user/workspace/b.txt")
listed = Sandbox.list(query=SandboxQuery(metadata={"client": "old-sdk"})).next_items()
killed = sbx.kill()
result = {
    "version": version("e2b"),
    "sandbox_id": sbx.sandbox_id,
    "stdout": run.stdout,
    "read": read,
    "stat_type": str(stat.type),
    "moved": moved.path,
    "listing": listing,
    "after_remove": after_remove,
    "big_read_ok": big_read == "a" * 4096,
    "listed": [s.sandbox_id for s in listed],
    "killed": killed,
    "running": sbx.is_running(),
}
print(json.dumps(result))
