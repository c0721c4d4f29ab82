"""Running host tools (ip, runsc, …) from asyncio, failing with what they printed."""

from __future__ import annotations

import asyncio


class CommandFailed(RuntimeError):
    pass


async def run(*argv: str, check: bool = True, timeout_s: float = 60, input: bytes | None = None) -> str:
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
    if check and process.returncode != 0:
        message = (err or out).decode(errors="replace").strip()
        raise CommandFailed(f"{' '.join(argv)} failed ({process.returncode}): {message}")
    return out.decode(errors="replace")
