"""The built wheel, installed into a fresh virtual environment, serves Hearth from an
empty directory on the embedded default: what a user who installs the wheel and runs
``hearth serve`` gets, with no checkout anywhere on the path.

The wheel is built from a copy of the sources (setuptools writes ``build/`` and
``*.egg-info`` next to them, and a stale ``build/lib`` would leak into the wheel).
It is installed with ``--no-deps``; its dependencies come from this test's own
virtual environment through a ``.pth`` line, which keeps the test at seconds instead
of re-installing aiortc, numpy and PostgreSQL's binaries. A ``.pth`` line adds a
directory without processing that directory's own ``.pth`` files, so the editable
install of the checkout living there stays inert: ``server`` can only come from the
wheel, and the test checks it does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import venv
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.helpers import GatewayClient, register

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TOP_FILES = ("pyproject.toml", "README.md")


@dataclass(frozen=True)
class Installed:
    venv: Path
    site: Path
    """The fresh environment's site-packages, where the wheel went."""

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def _run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def _packages() -> list[str]:
    """The top-level packages: folders with ``__init__.py`` (tests excepted)."""
    return sorted(entry.name for entry in ROOT.iterdir() if entry.is_dir()
                  and entry.name != "tests" and (entry / "__init__.py").is_file())


def _source_files(name: str) -> set[str]:
    """Every file of package ``name`` as the checkout has it, relative to the root."""
    return {str(path.relative_to(ROOT)) for path in (ROOT / name).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            and "node_modules" not in path.parts and path.suffix != ".pyc"}


def _copy_sources(dest: Path) -> None:
    """The project as an sdist would carry it: top-level files and every package."""
    dest.mkdir()
    for name in TOP_FILES:
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for name in _packages():
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that points at the checkout or configures
    Hearth (so the embedded default is what runs) or measures coverage."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("HEARTH_", "COV_CORE_", "COVERAGE_"))
           and key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    _copy_sources(source)
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
          "-w", str(dist), str(source)], env=_clean_env())
    wheels = list(dist.glob("hearth-*.whl"))
    assert len(wheels) == 1, wheels
    target = base / "venv"
    venv.create(target, with_pip=False)
    python = str(target / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
          "--no-index", "--disable-pip-version-check", str(wheels[0])], env=_clean_env())
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   env=_clean_env()).strip()
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(purelib) / "hearth-test-deps.pth").write_text("".join(f"{p}\n" for p in outer))
    return Installed(target, Path(purelib))


def test_the_wheel_carries_every_package_and_its_data(installed: Installed) -> None:
    """Every file of every package (code, migrations, web pages, the harness's peers) is
    installed, and imported from an empty directory each package is the installed copy."""
    packages = _packages()
    for name in packages:
        missing = {path for path in _source_files(name)
                   if not (installed.site / path).is_file()}
        assert not missing, f"not in the wheel (add them to package-data): {sorted(missing)}"
    empty = installed.venv.parent / "probe"
    empty.mkdir()
    probe = (
        "import importlib, pkgutil, sys\n"
        "for name in sys.argv[1:]:\n"
        "    package = importlib.import_module(name)\n"
        "    print(name, package.__file__)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        if info.ispkg:\n"
        "            print(info.name, importlib.import_module(info.name).__file__)\n"
    )
    out = _run([str(installed.bin / "python"), "-c", probe, *packages], cwd=empty,
               env=_clean_env())
    origins = dict(line.split(" ", 1) for line in out.splitlines())
    assert "rooms.media" in origins and set(packages) <= set(origins), origins
    for name, path in origins.items():
        assert Path(path).is_relative_to(installed.site), f"{name} imported from {path}"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-5000:]


async def _wait_ready(http: aiohttp.ClientSession, base: str,
                      process: asyncio.subprocess.Process, deadline_s: float = 120) -> bool:
    """True once ``/readyz`` answers 200; False if the process exits or time runs out."""
    deadline = time.monotonic() + deadline_s
    while process.returncode is None and time.monotonic() < deadline:
        try:
            async with http.get(f"{base}/readyz") as reply:
                if reply.status == 200:
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    return False


async def test_installed_hearth_serves_from_an_empty_directory(installed: Installed) -> None:
    """``hearth serve`` with no configuration at all: embedded PostgreSQL under
    ``./.hearth``, migrations applied from the wheel, the web page, readiness, and a
    websocket that says hello and accepts an account registered over REST."""
    empty = installed.venv.parent / "empty"
    empty.mkdir()
    port = free_port()
    log = installed.venv.parent / "serve.log"
    env = _clean_env(PATH=f"{installed.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                     # Only to keep registration quick; the rest is the default.
                     HEARTH_ARGON2_TIME_COST="1", HEARTH_ARGON2_MEMORY_KIB="8192")
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(installed.bin / "hearth"), "serve", "--port", str(port),
            cwd=empty, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            assert await _wait_ready(http, base, process), \
                "hearth serve (installed) did not become ready:\n" + _tail(log)
            async with http.get(f"{base}/readyz") as reply:
                assert reply.status == 200
                assert (await reply.json())["status"] == "ok"
            async with http.get(f"{base}/") as reply:
                assert reply.status == 200
                assert reply.content_type == "text/html"
                assert "<html" in (await reply.text()).lower()
            for path in ("/static/app.js", "/static/session.js", "/static/shell.js",
                         "/settings", "/mod", "/voice", "/courses", "/courses/build",
                         "/static/courses/learner.js", "/static/courses/builder.js"):
                async with http.get(f"{base}{path}") as reply:
                    assert reply.status == 200, path
            account = await register(http, base)
            # The first account of a fresh embedded install owns the starter community.
            async with http.get(f"{base}/api/v1/communities", headers={
                    "Authorization": f"Bearer {account['access_token']}"}) as reply:
                [starter] = (await reply.json())["communities"]
                assert starter["role"] == "owner", starter
            client = await GatewayClient.connect(http, f"ws://127.0.0.1:{port}/gateway")
            try:
                assert client.hello["op"] == "hello"
                await client.identify(account["access_token"])
            finally:
                await client.close()
        assert (empty / ".hearth" / "postgres").is_dir()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert process.returncode == 0, _tail(log)
