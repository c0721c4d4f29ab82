"""Running host tools (ip, runsc, skopeo, …) from asyncio, failing with what they printed."""

from __future__ import annotations

import asyncio


class CommandFailed(RuntimeError):
    pass


async def run_status(*argv: str, timeout_s: float = 60, input: bytes | None = None) -> tuple[int, str, str]:
    """Its exit status, output and error output; `CommandFailed` if it outlives `timeout_s`
    (it is killed)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(input), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise CommandFailed(f"{argv[0]} timed out after {timeout_s:.0f}s: {' '.join(argv)}") from None
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def run(*argv: str, check: bool = True, timeout_s: float = 60, input: bytes | None = None) -> str:
    code, out, err = await run_status(*argv, timeout_s=timeout_s, input=input)
    if check and code != 0:
        message = (err or out).strip()
        raise CommandFailed(f"{' '.join(argv)} failed ({code}): {message}")
    return out
