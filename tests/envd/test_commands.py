"""Commands through the real e2b SDK (sync client) against envd."""

import time

import pytest
from e2b import CommandExitException, NotFoundException, TimeoutException

pytestmark = pytest.mark.sandbox


def test_stdout_stderr_and_exit_code(sbx):
    result = sbx.commands.run("echo out; echo err >&2")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 0)


def test_non_zero_exit_raises_with_output(sbx):
    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("echo partial; echo bad >&2; exit 3")
    assert info.value.exit_code == 3
    assert info.value.stdout == "partial\n"
    assert info.value.stderr == "bad\n"
    assert info.value.error == "exit status 3"


def test_env_vars_apply_to_one_command_only(sbx):
    assert sbx.commands.run("echo $FOO", envs={"FOO": "bar"}).stdout == "bar\n"
    assert sbx.commands.run("echo ${FOO:-unset}").stdout == "unset\n"


def test_sandbox_env_vars_from_init(envd, sbx):
    assert envd.init(envVars={"SANDBOX_VAR": "from-init"}).status_code == 204
    try:
        assert sbx.commands.run("echo $SANDBOX_VAR").stdout == "from-init\n"
        assert sbx.commands.run("echo $SANDBOX_VAR", envs={"SANDBOX_VAR": "override"}).stdout == "override\n"
    finally:
        envd.init(envVars={})


def test_cwd_defaults_to_home_and_can_be_set(sbx):
    assert sbx.commands.run("pwd").stdout == "/home/user\n"
    assert sbx.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    sbx.files.make_dir("nested/dir")
    assert sbx.commands.run("pwd", cwd="nested/dir").stdout == "/home/user/nested/dir\n"


def test_missing_cwd_is_an_error(sbx):
    with pytest.raises(Exception, match="does not exist"):
        sbx.commands.run("pwd", cwd="/no/such/dir")


def test_user_selection(sbx):
    assert sbx.commands.run("whoami; echo $HOME").stdout == "user\n/home/user\n"
    assert sbx.commands.run("whoami; echo $HOME", user="root").stdout == "root\n/root\n"


def test_unknown_user_is_refused(sbx):
    from e2b import AuthenticationException

    with pytest.raises(AuthenticationException):
        sbx.commands.run("true", user="nosuchuser")


def test_timeout_kills_the_process(sbx):
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 30; echo never", timeout=1)
    deadline = time.time() + 10
    while time.time() < deadline:
        if not any("sleep 30" in " ".join(p.args) for p in sbx.commands.list()):
            break
        time.sleep(0.2)
    assert not any("sleep 30" in " ".join(p.args) for p in sbx.commands.list())


def test_background_list_connect_kill(sbx):
    handle = sbx.commands.run("echo started; sleep 60", background=True)
    listed = {p.pid: p for p in sbx.commands.list()}
    assert handle.pid in listed
    assert listed[handle.pid].cmd == "/bin/bash"
    assert listed[handle.pid].args == ["-l", "-c", "echo started; sleep 60"]

    attached = sbx.commands.connect(handle.pid)
    assert sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as info:
        attached.wait()
    assert info.value.exit_code == -1
    assert "killed" in info.value.error
    assert handle.pid not in {p.pid for p in sbx.commands.list()}


def test_background_output_streams_while_running(sbx):
    seen: list[str] = []
    handle = sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.1; done", background=True)
    result = handle.wait(on_stdout=seen.append)
    assert result.stdout == "line1\nline2\nline3\n"
    assert "".join(seen) == result.stdout


def test_connect_after_exit_reports_the_end(sbx):
    handle = sbx.commands.run("echo done", background=True)
    handle.wait()
    assert sbx.commands.connect(handle.pid).wait().exit_code == 0


def test_kill_unknown_pid_returns_false(sbx):
    assert sbx.commands.kill(999_999) is False


def test_connect_unknown_pid_is_not_found(sbx):
    with pytest.raises(NotFoundException):
        sbx.commands.connect(999_999)


def test_stdin_send_and_close(sbx):
    handle = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(handle.pid, "hello ")
    sbx.commands.send_stdin(handle.pid, "world\n")
    sbx.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "hello world\n"


def test_stdin_is_closed_unless_requested(sbx):
    # Without stdin the command reads EOF at once instead of hanging.
    assert sbx.commands.run("cat; echo eof").stdout == "eof\n"


def test_large_output_streams_through(sbx):
    total = 0

    def count(chunk: str) -> None:
        nonlocal total
        total += len(chunk)

    sbx.commands.run("head -c 30000000 /dev/zero | tr '\\0' a", on_stdout=count, timeout=120)
    assert total == 30_000_000
