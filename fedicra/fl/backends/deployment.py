"""Flower deployment backend: a real SuperLink and one SuperNode per site on 127.0.0.1.

`run(config, run_dir)` does by itself what docs/deployment.md tells a user to do by hand on real
hosts: start `flower-superlink`, one `flower-supernode --node-config 'site=<k> state-dir=...'` per
site, submit the fedicra Flower app with `flwr run`, wait for `summary.json` (or the ServerApp's error
file), and stop every process it started, also on errors and Ctrl-C. The children get a parent-death
signal (Linux `PR_SET_PDEATHSIG`), so a launcher killed with SIGKILL leaves none behind; the nodes'
states (`<run_dir>/nodes/`) and the server checkpoint let the same command resume the run.

The Flower app is a two-file project written to a temporary folder: its pyproject names the
components in this package (`fedicra.fl.flower_app:server_app` / `client_app`) and carries the
engine configuration and run directory as the run config (`config-json`, `run-dir`). It lists no
dependencies and the SuperLink runs with runtime dependency installation disabled: every process
uses the Python environment fedicra is installed in (Flower would otherwise `uv sync` torch).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fedicra import record
from fedicra.errors import UserError

CONNECTION = "fedicra-local"   # name of the SuperLink connection in the private FLWR_HOME
START_TIMEOUT_S = 60.0         # SuperLink start-up, and `flwr run` submission
STATUS_EVERY_S = 10.0          # how often the run status is asked while waiting
STOP_GRACE_S = 10.0            # SIGTERM, then SIGKILL after this many seconds


class DeploymentError(UserError):
    """The Flower deployment failed (a process died, the run failed or could not be submitted): one line."""


def _die_with_parent() -> None:
    """preexec_fn: the kernel kills this child when the launcher dies, even by SIGKILL (Linux prctl)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:   # the launcher died before prctl took effect
        os._exit(1)


SUPEREXEC_POLL_S = 0.25   # FLWR_SUPEREXEC_TASK_POLL_INTERVAL for the local deployment (flwr default 1 s)


def current_round(run_dir: Path) -> int:
    """The round a run is in: one after the last round in rounds.csv (1 before any, or while it is unreadable)."""
    try:
        rounds = record.read_rounds(run_dir)["round"]
    except record.RecordError:
        return 1
    return int(rounds.max()) + 1 if len(rounds) else 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _executable(name: str) -> str:
    # Prefer the scripts beside this interpreter (the environment fedicra runs in).
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        raise UserError(f"backend deployment: {name} not found; install fedicra with flwr in this environment")
    return found


def app_pyproject(config: dict[str, Any], run_dir: Path) -> str:
    """The pyproject.toml of the minimal Flower app that points at fedicra's apps."""
    import tomli_w  # a dependency of flwr

    return tomli_w.dumps({
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "fedicra-flower", "version": "0.1.0", "dependencies": [],
                    "description": "fedicra federated run (components live in the installed fedicra package)"},
        "tool": {"flwr": {"app": {
            "publisher": "fedicra",
            "components": {"serverapp": "fedicra.fl.flower_app:server_app",
                           "clientapp": "fedicra.fl.flower_app:client_app"},
            "config": {"config-json": json.dumps(config, sort_keys=True), "run-dir": str(Path(run_dir).resolve())},
        }}},
    })


def connection_toml(address: str) -> str:
    import tomli_w

    return tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: {"address": address, "insecure": True}}})


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:limit]


class LocalDeployment:
    """Starts and stops the processes of a loopback deployment; use as a context manager."""

    def __init__(self, config: dict[str, Any], run_dir: Path, keys: list[int], workdir: Path | None = None):
        from fedicra.fl.flower_app import LAUNCHER_PID

        self.config, self.run_dir, self.keys = config, Path(run_dir), list(keys)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fedicra-flower-"))
        self.processes: list[tuple[str, subprocess.Popen, Path]] = []   # (role, process, log)
        self.env = dict(os.environ)
        # Each SuperLink / SuperNode runs a flower-superexec that checks for work to launch every
        # second by default (flwr 1.42); a quarter second takes most of that wait out of every round.
        self.env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(SUPEREXEC_POLL_S))
        self.env.update({
            "FLWR_HOME": str(self.workdir / "flwr-home"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            # every ServerApp/ClientApp of this deployment exits when this process is gone
            LAUNCHER_PID: str(os.getpid()),
            # the SuperLink and SuperNodes spawn flower-superexec / flwr-serverapp / flwr-clientapp
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        })
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.run_id: str | None = None

    # ------------------------------------------------------------------ processes
    def _start(self, role: str, command: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{role}.log"
        with open(log, "wb") as handle:
            # Own session: the whole tree can be signalled at once and Ctrl-C reaches only us.
            process = subprocess.Popen(command, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir,
                                       preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.processes.append((role, process, log))
        return process

    def _check_alive(self) -> None:
        for role, process, log in self.processes:
            if process.poll() is None:
                continue
            where = f"in round {current_round(self.run_dir)}"
            last = _one_line(log.read_text(errors="replace"))
            if role.startswith("supernode-site"):
                site = role.removeprefix("supernode-site")
                if self.config.get("allow_failures") and self.config.get("client_timeout"):
                    continue   # the server drops the site once its reply is overdue (client_timeout)
                raise DeploymentError(f"site {site}: its SuperNode exited with code {process.returncode} {where}"
                                      f" ({last}; log: {log})")
            raise DeploymentError(f"{role} exited with code {process.returncode} {where} ({last}; log: {log})")

    def start(self) -> None:
        (self.workdir / "flwr-home").mkdir(parents=True, exist_ok=True)
        (self.workdir / "flwr-home" / "config.toml").write_text(connection_toml(self.address))
        self._start("superlink", [_executable("flower-superlink"), "--insecure",
                                  "--disable-runtime-dependency-installation",
                                  "--host", "127.0.0.1", "--port", str(self.port)])
        self._wait_healthy()
        for key in self.keys:
            self._start(f"supernode-site{key}", [
                _executable("flower-supernode"), "--insecure", "--superlink", self.address,
                "--host", "127.0.0.1", "--port", str(free_port()),
                # each node's personal state (its "own disk"); kept with the run so a rerun resumes
                "--node-config", f"site={key} state-dir={json.dumps(str(self.run_dir / 'nodes'))}"])

    def _wait_healthy(self) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"http://{self.address}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise DeploymentError(f"the SuperLink did not answer on {self.address} within {START_TIMEOUT_S:g} s "
                              f"(log: {self.workdir / 'superlink.log'})")

    def stop(self) -> None:
        """Stop every process this deployment started, with everything they spawned."""
        import psutil

        tree: list[psutil.Process] = []
        for _, process, _ in self.processes:
            try:
                root = psutil.Process(process.pid)
                tree += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for _, process, _ in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in tree:   # children that started their own session (flower-superexec does)
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=STOP_GRACE_S)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=STOP_GRACE_S)
        for _, process, _ in self.processes:
            try:
                process.wait(timeout=STOP_GRACE_S)   # reap our direct children
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> "LocalDeployment":
        # SIGTERM (a scheduler cancelling the job) must also stop the children: turn it into SystemExit.
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_signal)
        try:
            self.start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
        if exc[0] is None:
            shutil.rmtree(self.workdir, ignore_errors=True)   # logs are kept when something failed

    # ------------------------------------------------------------------ the run
    def flwr(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([_executable("flwr"), *args], env=self.env, cwd=self.workdir, timeout=timeout,
                              capture_output=True, text=True)

    def submit(self) -> str:
        app = self.workdir / "app"
        app.mkdir(exist_ok=True)
        (app / "pyproject.toml").write_text(app_pyproject(self.config, self.run_dir))
        done = self.flwr("run", str(app), CONNECTION, "--format", "json")
        try:
            self.run_id = str(json.loads(done.stdout[done.stdout.index("{"):])["run-id"])
        except (ValueError, KeyError, TypeError):
            raise DeploymentError(f"flwr run failed (exit {done.returncode}): "
                                  f"{_one_line(done.stderr or done.stdout)}") from None
        return self.run_id

    def status(self) -> str:
        done = self.flwr("ls", CONNECTION, "--run-id", str(self.run_id), "--format", "json")
        try:
            return json.loads(done.stdout[done.stdout.index("{"):])["runs"][0]["status"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "unknown"

    def wait(self, previous_summary_mtime: int | None) -> dict[str, Any]:
        from fedicra.fl.flower_app import ERROR_FILE
        from fedicra.fl.server import RunError

        summary, error = self.run_dir / record.SUMMARY, self.run_dir / ERROR_FILE
        next_status = time.monotonic() + STATUS_EVERY_S
        while True:
            if summary.is_file() and summary.stat().st_mtime_ns != previous_summary_mtime:
                return json.loads(summary.read_text())
            if error.is_file():
                raise RunError(error.read_text().strip())
            self._check_alive()
            if time.monotonic() > next_status:
                status = self.status()
                if status.startswith("finished"):
                    time.sleep(1.0)   # the ServerApp's last file may land just before its status
                    if summary.is_file() and summary.stat().st_mtime_ns != previous_summary_mtime:
                        continue
                    if error.is_file():
                        continue
                    raise DeploymentError(f"Flower run {self.run_id} ended as {status} without results "
                                          f"(logs: {self.workdir}; `flwr log {self.run_id}` while it runs)")
                next_status = time.monotonic() + STATUS_EVERY_S
            time.sleep(0.5)


def run(experiment, run_dir: Path) -> dict[str, Any]:
    """One SuperNode per client key of `experiment`; its ServerApp (another process) assembles the same
    experiment from the configuration it is given."""
    from fedicra.fl.flower_app import ERROR_FILE

    run_dir = Path(run_dir).resolve()
    # The ServerApp and ClientApps run in other working directories.
    config = {**experiment.config, "dataset": str(Path(experiment.config["dataset"]).resolve())}
    keys = experiment.keys
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    summary = run_dir / record.SUMMARY
    previous = summary.stat().st_mtime_ns if summary.is_file() else None
    with LocalDeployment(config, run_dir, keys) as deployment:
        deployment.submit()
        return deployment.wait(previous)


def write_app(config: dict[str, Any], run_dir: Path, app_dir: Path) -> Path:
    """Write the Flower app project for a hand-made deployment (see docs/deployment.md)."""
    from fedicra.fl.outputs import atomic_write

    path = Path(app_dir) / "pyproject.toml"
    atomic_write(path, app_pyproject(config, run_dir))
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m fedicra.fl.backends.deployment --config run.yaml --out RUN_DIR --app APP_DIR`."""
    import argparse

    from fedicra.fl.config import load_config

    parser = argparse.ArgumentParser(prog="python -m fedicra.fl.backends.deployment",
                                     description="Write the Flower app project (pyproject.toml) that runs one "
                                                 "fedicra experiment on your own SuperLink with `flwr run`.")
    parser.add_argument("--config", "-c", help="YAML run configuration")
    parser.add_argument("--out", "-o", required=True, help="run directory, as seen by the SuperLink host")
    parser.add_argument("--app", required=True, help="folder to write the Flower app project into")
    parser.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from fedicra.errors import run_cli

    def command() -> None:
        config = load_config(args.config, [*args.overrides, "backend=deployment"])
        print(write_app(config, Path(args.out), Path(args.app)))

    return run_cli(command)


if __name__ == "__main__":
    sys.exit(main())
