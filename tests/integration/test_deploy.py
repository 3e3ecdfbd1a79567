"""The deployment files: the systemd unit and its environment file, the container image.

Docker cannot run here, so the image is checked by parts: its build context, its wheel
built the way its build stage builds it, installed the way its runtime stage installs it,
and started the way its ENTRYPOINT starts it, with its HEALTHCHECK run against it."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from selfheal.settings import Settings, _env_name
from tests.support.daemon import LoggedProcess
from tests.support.http import free_port

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "selfheal.service"
ENV_SAMPLE = REPO / "systemd" / "selfheal.env"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# Where the unit expects the package (and the image puts it).
INSTALLED_SELFHEAL = "/opt/selfheal/venv/bin/selfheal"

NO_SYSTEMD_ANALYZE = "systemd-analyze is not installed (Debian: apt-get install systemd)"
HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
}


# --- The systemd unit -------------------------------------------------------------------


def unit_directives(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value given, in order (systemd allows keys to repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """A systemd time span such as 30, 30s, 1min 30s, 5min."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit, its ExecStart pointed at the `selfheal` installed with these tests (the
    only change: /opt/selfheal/venv does not exist here)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip(NO_SYSTEMD_ANALYZE)
    selfheal = Path(sysconfig.get_path("scripts")) / "selfheal"
    assert selfheal.is_file(), f"the tests' environment has no {selfheal}"
    text = UNIT.read_text()
    assert INSTALLED_SELFHEAL in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_SELFHEAL, str(selfheal)))
    return copy


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args],  # noqa: S607 - found on PATH, as an operator runs it
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"},
    )


def test_systemd_accepts_the_unit(runnable_unit: Path) -> None:
    done = systemd_analyze("verify", str(runnable_unit))
    complaints = [
        line for line in (done.stdout + done.stderr).splitlines() if runnable_unit.name in line
    ]
    # An unknown or misspelt key is only a warning: it would drop a line of the sandbox.
    assert (done.returncode, complaints) == (0, [])


def test_the_unit_sandbox_rates_an_exposure_of_3_or_less(runnable_unit: Path) -> None:
    done = systemd_analyze("security", "--offline=true", str(runnable_unit))
    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout[-2000:]
    assert float(match.group(1)) <= 3.0, match.group(0)


def test_the_unit_waits_for_ready_pings_the_watchdog_and_is_sandboxed() -> None:
    service = unit_directives(UNIT.read_text())["Service"]

    def one(key: str) -> str:
        assert key in service, f"the unit has no {key}="
        return service[key][-1]

    assert (one("Type"), one("NotifyAccess")) == ("notify", "main")
    assert one("ExecStart").split()[:2] == [INSTALLED_SELFHEAL, "run"]
    assert seconds(one("WatchdogSec")) == 30
    assert one("Restart") == "on-failure"
    assert seconds(one("RestartSec")) > 0
    assert seconds(one("TimeoutStartSec")) > 0
    # Longer than the shutdown grace, so that SIGTERM's in-flight work is finished.
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    assert seconds(one("TimeoutStopSec")) > grace
    assert one("EnvironmentFile") == "/etc/selfheal/selfheal.env"
    environment = dict(
        item.split("=", 1) for value in service["Environment"] for item in shlex.split(value)
    )
    assert environment["PYTHONUNBUFFERED"] == "1"
    assert environment["SELFHEAL_LOG_FORMAT"] == "json"
    assert {key: one(key) for key in HARDENING} == HARDENING
    assert "@system-service" in service["SystemCallFilter"]
    # It must reach Postgres and the APIs anywhere: no address allow list.
    assert "IPAddressDeny" not in service


# --- The environment file ---------------------------------------------------------------


def rendered_default(name: str) -> str:
    default = Settings.model_fields[name].default
    if default is None:
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def test_the_environment_file_documents_every_setting_with_its_default() -> None:
    lines = ENV_SAMPLE.read_text().splitlines()
    documented: dict[str, tuple[bool, str, str]] = {}  # name -> (commented, value, meaning)
    for line in lines:
        match = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]*)=(\S*)(?:  - (.+))?", line)
        if match:
            commented, name, value, meaning = match.groups()
            assert name not in documented, f"{name} is documented twice"
            documented[name] = (commented is not None, value, meaning or "")
    names = {_env_name((field,)): field for field in Settings.model_fields}
    assert sorted(set(names) - set(documented)) == [], "settings the file does not name"
    assert sorted(set(documented) - set(names)) == [], "names the daemon does not read"
    # DATABASE_URL is the one line to fill in; every other shows the daemon's default.
    assert [name for name, (commented, *_) in documented.items() if not commented] == [
        "DATABASE_URL"
    ]
    for name, (commented, value, meaning) in documented.items():
        if commented:
            assert meaning, f"{name} has no meaning"
            assert value == rendered_default(names[name]), f"{name}: not its default"
    assert "0600" in ENV_SAMPLE.read_text()


# --- The container image ----------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") or (not raw.strip() and not pending):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1]
            continue
        logical.append(pending + raw)
        pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    return [
        (head.upper(), rest.strip())
        for head, _, rest in (line.strip().partition(" ") for line in logical)
    ]


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions(text):
        if instruction[0] == "FROM":
            result.append([])
        assert result, "an instruction before the first FROM"
        result[-1].append(instruction)
    return result


def arguments(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def healthcheck_command(runtime: list[tuple[str, str]]) -> list[str]:
    [healthcheck] = arguments(runtime, "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--timeout=" in options
    parsed = json.loads(command)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def image_environment(runtime: list[tuple[str, str]]) -> dict[str, str]:
    return dict(
        item.split("=", 1) for value in arguments(runtime, "ENV") for item in shlex.split(value)
    )


def test_the_image_runs_the_daemon_as_a_user_that_is_not_root() -> None:
    build, runtime = stages(DOCKERFILE.read_text())
    assert build[0][1].startswith("python:3.11-slim")
    assert runtime[0][1].startswith("python:3.11-slim")
    assert arguments(build, "RUN")[-1].startswith("pip wheel")
    [user] = arguments(runtime, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert [json.loads(a) for a in arguments(runtime, "ENTRYPOINT")] == [["selfheal"]]
    assert [json.loads(a) for a in arguments(runtime, "CMD")] == [["run"]]
    assert arguments(runtime, "EXPOSE") == ["9464"]
    assert arguments(runtime, "STOPSIGNAL") == ["SIGTERM"]
    environment = image_environment(runtime)
    assert environment["PYTHONUNBUFFERED"] == "1"
    assert environment["SELFHEAL_LOG_FORMAT"] == "json"
    assert environment["SELFHEAL_HTTP_ADDR"] == "127.0.0.1:9464"
    assert "/healthz" in " ".join(healthcheck_command(runtime))
    # Without the embedded extra: a container is pointed at a real Postgres.
    assert not any("embedded" in run or "pgserver" in run for run in arguments(runtime, "RUN"))


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, pattern) as Docker reads .dockerignore: the last match decides."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob_text = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(glob_text):
            if glob_text.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif glob_text.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob_text[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob_text[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif glob_text[i] == "[":
                end = glob_text.index("]", i)
                regex, i = regex + glob_text[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(glob_text[i]), i + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def sent_to_docker(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a path of the repository is in the build context (a match on a parent
    directory counts, as in Docker)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return not excluded


def build_context_copies(build: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(source in the repository, destination in WORKDIR) of the build stage's COPYs."""
    copies = []
    for args in arguments(build, "COPY"):
        *sources, destination = shlex.split(args)
        assert not any(s.startswith("--") for s in sources), "COPY --from in the build stage"
        for source in sources:
            target = destination if not destination.endswith("/") else destination + source
            copies.append((source, os.path.normpath(target)))
    return copies


def test_the_build_context_holds_the_package_sources_and_no_more() -> None:
    patterns = dockerignore_patterns()
    build = stages(DOCKERFILE.read_text())[0]
    copied = [source for source, _ in build_context_copies(build)]
    assert set(copied) >= {"pyproject.toml", "README.md", "daemon", "sql"}
    for source in copied:
        files = [source] if (REPO / source).is_file() else repo_files(REPO / source)
        assert files, source
        assert [f for f in files if not sent_to_docker(f, patterns)] == []
    for kept_out in (
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "tests/conftest.py",
        "bench/README.md",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache/nodeids",
        "daemon/selfheal/__pycache__/cli.cpython-311.pyc",
        "sql/__pycache__/x.pyc",
    ):
        assert not sent_to_docker(kept_out, patterns), kept_out


def repo_files(directory: Path) -> list[str]:
    return sorted(
        str(path.relative_to(REPO))
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


def assemble_build_context(build: list[tuple[str, str]], into: Path) -> None:
    """What the build stage's COPYs put in its WORKDIR, from what Docker would send."""
    patterns = dockerignore_patterns()
    for source, destination in build_context_copies(build):
        origin = REPO / source
        files = [origin] if origin.is_file() else [p for p in origin.rglob("*") if p.is_file()]
        for path in files:
            relative = str(path.relative_to(REPO))
            if not sent_to_docker(relative, patterns):
                continue
            inside = Path(destination) / path.relative_to(origin) if origin.is_dir() else ""
            target = into / (inside or destination)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def pip_or_skip(argv: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=clean_environment()
    )
    if done.returncode == 0:
        return
    offline = (
        "No matching distribution",
        "Could not find a version",
        "NewConnectionError",
        "Temporary failure in name resolution",
        "Network is unreachable",
    )
    output = done.stdout + done.stderr
    if any(sign in output for sign in offline):
        pytest.skip(f"{what}: pip cannot reach a package index here: {output.strip()[-300:]}")
    pytest.fail(f"{what} failed:\n{output[-3000:]}")


def clean_environment() -> dict[str, str]:
    """This environment less the tests' own: no settings, source tree or virtualenv."""
    drop = {"DATABASE_URL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {
        key: value
        for key, value in os.environ.items()
        if key not in drop and not key.startswith(("SELFHEAL_", "COV_CORE_", "COVERAGE_"))
    }


class NotifySocket:
    """A stand-in for systemd's notify socket: the datagrams a daemon sends it."""

    def __init__(self) -> None:
        # A short path: the one of a unix socket is at most 107 bytes.
        self._dir = tempfile.mkdtemp(prefix="selfheal-notify-")
        self.path = os.path.join(self._dir, "notify")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        self.received: list[str] = []

    def wait_for(self, line: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {line} on NOTIFY_SOCKET within {timeout} s: {self.received}")
            self._socket.settimeout(remaining)
            with contextlib.suppress(TimeoutError):
                self.received += self._socket.recv(65536).decode().splitlines()

    def close(self) -> None:
        self._socket.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.05)


def get_healthz(port: int) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status), response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


@pytest.fixture
def started() -> Iterator[list[LoggedProcess]]:
    processes: list[LoggedProcess] = []
    yield processes
    for process in processes:
        process.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    stand_in = NotifySocket()
    yield stand_in
    stand_in.close()


def test_the_image_s_wheel_installs_starts_healthy_and_stops_on_sigterm(
    db_url: str, tmp_path: Path, started: list[LoggedProcess], notify_socket: NotifySocket
) -> None:
    build, runtime = stages(DOCKERFILE.read_text())
    # The build stage's python, and the runtime stage's venv (the build leaves the venv as
    # it was: `pip wheel --no-deps` only writes the wheel).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    venv_bin = venv / "bin"

    # The build stage: its COPYs into a context of their own, then its last RUN.
    context, dist = tmp_path / "src", tmp_path / "dist"
    assemble_build_context(build, context)
    build_argv = shlex.split(arguments(build, "RUN")[-1].replace("/dist", str(dist)))
    assert build_argv[0] == "pip"
    pip_or_skip([str(venv_bin / "python"), "-m", *build_argv], context, "building the wheel")
    [wheel] = dist.glob("*.whl")

    # The runtime stage: its venv and pip steps, the image's paths mapped to this test's.
    [install] = [run for run in arguments(runtime, "RUN") if "/opt/selfheal/venv" in run]
    for step in install.split("&&"):
        if "/opt/selfheal/venv" not in step:
            continue  # removing the wheel, adding the user
        step = step.replace("/opt/selfheal/venv", str(venv)).replace("/tmp/dist", str(dist))  # noqa: S108 - the image's path
        argv = [part for word in shlex.split(step) for part in (glob.glob(word) or [word])]
        if argv[0] == "python":
            assert argv[1:3] == ["-m", "venv"]
            continue  # made above
        assert str(wheel) in argv, step
        pip_or_skip(argv, tmp_path, "installing the wheel")

    # Started as the image starts it: its ENV, its ENTRYPOINT and CMD on its PATH, from a
    # directory where no source tree can be imported.
    outside = tmp_path / "outside"
    outside.mkdir()
    env = clean_environment()
    image_env = image_environment(runtime)
    env.update(image_env)
    env["PATH"] = (
        image_env["PATH"]
        .replace("/opt/selfheal/venv", str(venv))
        .replace("$PATH", os.environ.get("PATH", ""))
    )
    where = subprocess.run(
        ["python", "-c", "import selfheal; print(selfheal.__file__)"],  # noqa: S607 - its PATH
        env=env,
        cwd=outside,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    port = free_port()
    env.update(
        {
            "DATABASE_URL": db_url,
            "SELFHEAL_HTTP_ADDR": f"127.0.0.1:{port}",  # the image's 0.0.0.0, kept on loopback
            "SELFHEAL_LOG_FORMAT": "json",
            "NOTIFY_SOCKET": notify_socket.path,
            "WATCHDOG_USEC": "2000000",
        }
    )
    [entrypoint] = [json.loads(a) for a in arguments(runtime, "ENTRYPOINT")]
    [cmd] = [json.loads(a) for a in arguments(runtime, "CMD")]
    executable = shutil.which(entrypoint[0], path=env["PATH"])
    assert executable == str(venv_bin / "selfheal")
    daemon = LoggedProcess([executable, *entrypoint[1:], *cmd], env, outside)
    started.append(daemon)
    daemon.wait_for("daemon.started", timeout=120)
    # What Type=notify and WatchdogSec= in the unit wait for.
    notify_socket.wait_for("READY=1", timeout=30)
    notify_socket.wait_for("WATCHDOG=1", timeout=30)

    def answers() -> bool:
        try:
            get_healthz(port)
        except (ConnectionError, urllib.error.URLError):
            return False
        return True

    poll(answers, 30, f"nothing answers on 127.0.0.1:{port} (SELFHEAL_HTTP_ADDR)")
    assert get_healthz(port) == (200, "ok")

    # The image's HEALTHCHECK, as given, once with the daemon's address and once with the
    # image's own (every interface: it must ask 127.0.0.1).
    healthcheck = healthcheck_command(runtime)
    for address in (f"127.0.0.1:{port}", f"0.0.0.0:{port}"):
        probe = subprocess.run(
            healthcheck,
            env={**env, "SELFHEAL_HTTP_ADDR": address},
            cwd=outside,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 0, (address, probe.stderr)

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=60) == 0
    daemon.wait_for("daemon.stopped", timeout=5)
    notify_socket.wait_for("STOPPING=1", timeout=5)
    # With nothing listening, the same check reports the container unhealthy.
    probe = subprocess.run(
        healthcheck, env=env, cwd=outside, capture_output=True, text=True, timeout=30
    )
    assert probe.returncode != 0
