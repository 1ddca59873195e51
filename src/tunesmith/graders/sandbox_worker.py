"""The python grader's worker process: run as a script by ``sandbox.py`` (``python -I``), stdlib only.

It never imports tunesmith. Protocol, one JSON object per line: the first line on stdin is the setup
(source, limits, the working directory, the paths to refuse); the worker answers ``{"ready": ...}``, then
answers each ``{"sample": ..., "item": ...}`` with ``{"score": x}`` or ``{"error": "..."}``. User code gets
/dev/null as stdout and stderr, so nothing it prints can be read as an answer by mistake.

The order of setup matters: limits, then the uid drop, then the audit hook, then the user's source.
"""

import contextlib
import json
import math
import os
import resource
import sys
import sysconfig

DENIED_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "pty.spawn",
        "subprocess.Popen",
        "resource.setrlimit",
        "resource.prlimit",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys._current_frames",
        "sqlite3.enable_load_extension",
        "sqlite3.load_extension",
        "webbrowser.open",
    }
)
DENIED_PREFIXES = ("socket.", "ctypes.")
DENIED_IMPORTS = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_testcapi"})
# Events whose first argument is a path: reading ones may look at the interpreter's own files, the rest
# may only touch the working directory.
READ_EVENTS = frozenset({"os.listdir", "os.scandir", "glob.glob"})
WRITE_EVENTS = frozenset(
    {
        "os.chdir",
        "os.chmod",
        "os.chown",
        "os.mkdir",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "shutil.copyfile",
        "shutil.move",
        "sqlite3.connect",
    }
)


def install_hook(workdir, read_roots, denied_roots):
    """An audit hook that refuses network, processes, introspection of other frames and files outside
    the working directory (reads: also the interpreter's libraries). Defined here and referenced by
    nothing but the interpreter, so user code has no handle on it."""
    workdir = os.path.realpath(workdir)
    read_roots = (*tuple(os.path.realpath(r) for r in read_roots), workdir)
    denied_roots = tuple(os.path.realpath(r) for r in denied_roots)
    devices = frozenset({"/dev/null", "/dev/urandom", "/dev/random"})
    realpath, join, fspath = os.path.realpath, os.path.join, os.fspath

    def under(path, roots):
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def check_path(event, raw, write):
        if isinstance(raw, int):
            return  # an already-open descriptor
        try:
            path = realpath(join(workdir, os.fsdecode(fspath(raw))))
        except (TypeError, ValueError):
            raise PermissionError(f"sandbox: {event} on an unreadable path") from None
        if path in devices and not under(path, denied_roots):
            return
        roots = (workdir,) if write else read_roots
        if under(path, denied_roots) or not under(path, roots):
            raise PermissionError(f"sandbox: {event} refused for {path}")

    def hook(event, args):
        if event == "open":
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            write = any(c in mode for c in "wax+") or bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            check_path(event, args[0], write)
        elif event in DENIED_EVENTS or event.startswith(DENIED_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed in a grader")
        elif event == "import" and args and str(args[0]).split(".")[0] in DENIED_IMPORTS:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed in a grader")
        elif event in READ_EVENTS and args:
            check_path(event, args[0], write=False)
        elif event in WRITE_EVENTS and args:
            for raw in args[:2] if event in ("os.rename", "os.symlink", "os.link", "shutil.move") else args[:1]:
                if raw is not None and not isinstance(raw, int | float | dict):
                    check_path(event, raw, write=True)

    sys.addaudithook(hook)


def set_limits(setup):
    gib = setup["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (gib, gib))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (setup["file_bytes"], setup["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    # CPU time for the worker's whole life (it grades many samples): a backstop behind the parent's
    # per-sample wall-clock timeout, which is what stops one hanging sample.
    cpu = int(setup["cpu_total_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))


def drop_privileges(uid):
    """Run as an unprivileged user (when started as root): the tunesmith home, the job database and any
    file not readable by everyone become unreadable, whatever the audit hook misses; forks are refused."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def one_grade(grade, request):
    try:
        value = grade(request["sample"], request["item"])
    except MemoryError:
        return {"error": "the grader ran out of memory (MemoryError)"}
    except BaseException as e:  # SystemExit and KeyboardInterrupt included: the grader must not end us
        return {"error": f"the grader raised {type(e).__name__}: {str(e)[:300]}"}
    if isinstance(value, bool) or not isinstance(value, int | float):
        return {"error": f"grade() returned {type(value).__name__}, not a number"}
    if not math.isfinite(value):
        return {"error": f"grade() returned {value}"}
    return {"score": float(value)}


# Libraries OpenAI's grader image offers that load ctypes while importing (refused once the hook is in):
# imported before the hook when the source names them. Their ctypes calls stay refused afterwards.
PRELOAD = ("numpy",)


def preload(source):
    for name in PRELOAD:
        if name in source:
            with contextlib.suppress(ImportError):
                __import__(name)


def main():
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    requests = sys.stdin
    setup = json.loads(requests.readline())
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as we do
    os.chdir(setup["workdir"])
    set_limits(setup)
    if setup.get("uid") is not None:
        drop_privileges(setup["uid"])
    preload(setup["source"])
    paths = sysconfig.get_paths()
    roots = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    install_hook(setup["workdir"], [*roots, sys.base_prefix, sys.prefix], setup["denied"])
    namespace = {"__name__": "grader", "__builtins__": __builtins__}
    try:
        exec(compile(setup["source"], "<grader>", "exec"), namespace)
        grade = namespace.get("grade")
        if not callable(grade):
            raise TypeError("the source defines no grade(sample, item) function")
    except BaseException as e:
        answers.write(json.dumps({"ready": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}) + "\n")
        return
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in requests:
        answer = one_grade(grade, json.loads(line))
        try:
            text = json.dumps(answer)
        except (TypeError, ValueError):
            text = json.dumps({"error": "the grader's answer could not be sent"})
        answers.write(text + "\n")


if __name__ == "__main__":
    main()
