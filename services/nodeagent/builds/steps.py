"""E2B's build instructions (COPY, ENV, RUN, WORKDIR, USER) as what runs in a build step
(`corral_libs.build_steps` says which are valid): their log labels, the cache key of their
result, and the shell scripts that carry them out inside the step's sandbox."""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field, replace

from corral_libs.contracts.messages import BuildStep

# Steps that change files (each is a layer); ENV and USER only change what later steps see.
LAYER_TYPES = ("COPY", "RUN", "WORKDIR")
# Where a COPY step finds its files, and a scratch directory to unpack them in.
FILES_MOUNT = "/.corral-build/files.tar"
SCRATCH_MOUNT = "/.corral-build/scratch"
CA_MOUNT = "/.corral-build/ca.pem"
# What TLS clients read for their trusted CAs, pointed at CA_MOUNT during build steps.
CA_ENV = (
    "SSL_CERT_FILE",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
)
BUILD_DIR = ".corral-build"


@dataclass(frozen=True, slots=True)
class StepState:
    """What a step runs with: the user, the working directory and the environment that the
    USER, WORKDIR and ENV steps before it set."""

    user: str
    workdir: str
    env: dict[str, str] = field(default_factory=dict)

    def after(self, step: BuildStep) -> StepState:
        if step.type == "USER":
            return replace(self, user=step.args[0])
        if step.type == "WORKDIR":
            return replace(self, workdir=posixpath.join(self.workdir, step.args[0]))
        if step.type == "ENV":
            pairs = dict(zip(step.args[::2], step.args[1::2], strict=True))
            return replace(self, env={**self.env, **pairs})
        return self


def label(step: BuildStep) -> str:
    """How the log shows a step: `RUN pip install numpy`, `COPY app/ /home/user/app`."""
    if step.type == "ENV":
        shown = " ".join(
            f"{name}={value}" for name, value in zip(step.args[::2], step.args[1::2], strict=True)
        )
        return f"ENV {shown}"
    if step.type == "COPY":
        return f"COPY {step.args[0]} {step.args[1]}"
    return f"{step.type} {step.args[0]}"


def chain_key(parent: str, step: BuildStep, state: StepState) -> str:
    """The cache key of a step's result: what it starts from (`parent`: the layer or state
    before it) and everything it runs with."""
    payload = json.dumps(
        [
            SCRIPTS_VERSION,
            parent,
            step.type,
            step.args,
            step.files_hash,
            state.user,
            state.workdir,
            sorted(state.env.items()),
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def run_user(step: BuildStep, state: StepState) -> str:
    if step.type == "RUN" and len(step.args) > 1 and step.args[1]:
        return step.args[1]
    return state.user


# The scripts run as root in the step's sandbox with positional arguments: they enter the
# working directory (made, and given to the step's user, if new), then become the user.
_PRELUDE = r"""
set -eu
user="$1"; workdir="$2"; shift 2
if [ ! -d "$workdir" ]; then
  mkdir -p "$workdir"
  chown "$user" "$workdir" 2>/dev/null || true
fi
cd "$workdir"
"""

# `become USER[:GROUP] SHELL COMMAND`: runs the command as that user, with its HOME, using
# only what minimal images have (util-linux's setpriv where it is, else su; no getent).
BECOME_USER = r"""
become() {
  name="${1%%:*}"; group="${1##*:}"; home=""
  while IFS=: read -r entry _ _ _ _ dir _; do
    if [ "$entry" = "$name" ]; then home="$dir"; fi
  done < /etc/passwd
  [ -n "$home" ] || { echo "user '$name' does not exist in this template" >&2; exit 126; }
  export HOME="$home" USER="$name" LOGNAME="$name"
  if setpriv --help 2>&1 | grep -q -- --reuid; then
    setpriv --reuid="$name" --regid="$group" --init-groups "$2" -c "$3"
  else
    su -s "$2" "$name" -c "$3"
  fi
}
"""

RUN_SCRIPT = (
    _PRELUDE
    + BECOME_USER
    + r"""
shell=/bin/sh
[ -x /bin/bash ] && shell=/bin/bash
# Not exec'd: the step's command never becomes the sandbox's first process, whose end
# would take the sandbox down before what it last printed is out.
if [ "$user" = root ] || [ "$user" = 0 ]; then
  "$shell" -c "$1"
else
  become "$user" "$shell" "$1"
fi
"""
)

WORKDIR_SCRIPT = _PRELUDE

# COPY <src> <dest> [owner] [mode], as Docker does it: a directory's contents go into dest;
# a file goes into dest if dest is a directory (or ends with /), else becomes dest.
COPY_SCRIPT = (
    _PRELUDE
    + r"""
src="$1"; dest="$2"; owner="$3"; mode="$4"
case "$dest" in /*) ;; *) dest="$workdir/$dest" ;; esac
[ -n "$owner" ] || owner="$user"
scratch="""
    + SCRATCH_MOUNT
    + r"""
tar -xf """
    + FILES_MOUNT
    + r""" -C "$scratch" --no-same-owner
cd "$scratch"
count=0
for match in $src; do
  if [ -e "$match" ] || [ -L "$match" ]; then count=$((count + 1)); fi
done
[ "$count" -gt 0 ] || { echo "COPY: nothing in the uploaded files matches '$src'" >&2; exit 1; }
into=0
case "$dest" in */) into=1 ;; esac
[ "$count" -gt 1 ] && into=1
[ -d "$dest" ] && into=1
case "$owner" in *:*) ;; *) owner="$owner:" ;; esac
settle() {
  chown -hR "$owner" "$1"
  if [ -n "$mode" ]; then find "$1" ! -type d ! -type l -exec chmod "$mode" {} +; fi
}
for match in $src; do
  [ -e "$match" ] || [ -L "$match" ] || continue
  if [ -d "$match" ] && [ ! -L "$match" ]; then
    # A directory COPY makes is the owner's, like what goes into it.
    [ -d "$dest" ] || { mkdir -p "$dest" && chown "$owner" "$dest"; }
    for entry in "$match"/* "$match"/.[!.]* "$match"/..?*; do
      [ -e "$entry" ] || [ -L "$entry" ] || continue
      target="${dest%/}/$(basename "$entry")"
      rm -rf "$target"
      cp -a "$entry" "$target"
      settle "$target"
    done
  elif [ "$into" = 1 ]; then
    [ -d "$dest" ] || { mkdir -p "$dest" && chown "$owner" "$dest"; }
    target="${dest%/}/$(basename "$match")"
    rm -rf "$target"
    cp -a "$match" "$target"
    settle "$target"
  else
    mkdir -p "$(dirname "$dest")"
    rm -rf "$dest"
    cp -a "$match" "$dest"
    settle "$dest"
  fi
done
"""
)


def script_argv(step: BuildStep, state: StepState) -> list[str]:
    """The step's process: a script and its arguments (never spliced into the script)."""
    user = run_user(step, state)
    if step.type == "RUN":
        return ["/bin/sh", "-c", RUN_SCRIPT, "corral-run", user, state.workdir, step.args[0]]
    if step.type == "COPY":
        owner = step.args[2] if len(step.args) > 2 else ""
        mode = step.args[3] if len(step.args) > 3 else ""
        workdir = state.workdir
        return [
            "/bin/sh",
            "-c",
            COPY_SCRIPT,
            "corral-copy",
            user,
            workdir,
            step.args[0],
            step.args[1],
            owner,
            mode,
        ]
    new = state.after(step)
    return ["/bin/sh", "-c", WORKDIR_SCRIPT, "corral-workdir", state.user, new.workdir]


# How steps are carried out is part of every cache key: a changed script builds anew.
SCRIPTS_VERSION = hashlib.sha256((RUN_SCRIPT + COPY_SCRIPT + WORKDIR_SCRIPT).encode()).hexdigest()[:16]
