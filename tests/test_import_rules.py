"""Who may import whom (docs/architecture.md, "Packages and who may import whom").

Two checks:

- **Direction**, by reading the source: every import statement of every module under ``src/rtc_mpu``
  (module level, inside functions, under ``if TYPE_CHECKING:``, relative imports and
  ``importlib.import_module("...")`` with a literal name) is checked against :data:`FORBIDDEN`.
  This catches an import that only runs on some code path, which the second check would miss.
- **What a process loads**, in a fresh interpreter: the API (imported, its app created, and the
  worker modules it imports lazily for the task store) loads no media library (PyAV, aiortc, numpy,
  Pillow, aiohttp) and not Celery; the WHIP edge loads no media library, no Flask and of the mixer
  only its Janus HTTP client; the task spec loads nothing but the standard library,
  :mod:`rtc_mpu.spec` and :mod:`rtc_mpu.layouts`. This catches what the first check cannot see:
  an allowed import that pulls a forbidden one in transitively.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import rtc_mpu

#: The package's source directory (src/rtc_mpu).
PACKAGE_DIR = Path(rtc_mpu.__file__).resolve().parent
#: Seconds a fresh interpreter gets to import the API and create its app.
SUBPROCESS_TIMEOUT = 60.0

#: Third-party libraries of the media path: never in the API process.
MEDIA_LIBRARIES = ("av", "aiortc", "PIL", "numpy", "aiohttp")
#: Celery and its messaging library: the API creates its app without them (a task is queued by
#: :mod:`rtc_mpu.workers.celery_app`, imported on the first StartMPUTask only).
CELERY = ("celery", "kombu")
#: The web framework and its toolkit.
FLASK = ("flask", "apiflask", "werkzeug")

#: Package (or module) -> imports it must not make, as module-name prefixes. ``rtc_mpu.spec`` and
#: ``rtc_mpu.layouts`` have a stricter rule, see :func:`violation`.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "rtc_mpu.mixer": (*FLASK, *CELERY, "rtc_mpu.api", "rtc_mpu.workers", "rtc_mpu.cli"),
    "rtc_mpu.api": (*MEDIA_LIBRARIES, *CELERY, "rtc_mpu.mixer", "rtc_mpu.cli"),
    "rtc_mpu.workers": (*FLASK, "rtc_mpu.api", "rtc_mpu.cli"),
    # The WHIP edge: an aiohttp process holding Janus sessions; no media library, and of the mixer only
    # the Janus HTTP client (EXCEPTIONS).
    "rtc_mpu.edge": (
        *FLASK,
        *CELERY,
        "av",
        "aiortc",
        "PIL",
        "numpy",
        "rtc_mpu.api",
        "rtc_mpu.workers",
        "rtc_mpu.cli",
        "rtc_mpu.stack",
        "rtc_mpu.mixer",
    ),
    # Stream ingest: a media path of its own (PyAV, numpy) that publishes with the rtc output's remote
    # publisher and RTP packetizer; never the web framework, the queue, the API or the workers.
    "rtc_mpu.ingest": (
        *FLASK,
        *CELERY,
        "aiortc",
        "PIL",
        "rtc_mpu.api",
        "rtc_mpu.workers",
        "rtc_mpu.cli",
        "rtc_mpu.stack",
    ),
}
#: Package -> modules it may import although :data:`FORBIDDEN` names a package holding them.
EXCEPTIONS: dict[str, tuple[str, ...]] = {
    "rtc_mpu.edge": ("rtc_mpu.mixer.sources.janus_http",),
}
#: What the plain-data packages may import of the project; besides that, only the standard library.
PLAIN_DATA: dict[str, tuple[str, ...]] = {
    "rtc_mpu.spec": ("rtc_mpu.spec", "rtc_mpu.layouts"),
    "rtc_mpu.layouts": ("rtc_mpu.layouts",),
}


def _within(name: str, prefix: str) -> bool:
    """Whether module ``name`` is ``prefix`` or inside it (``av.video`` is within ``av``, ``avx`` is not)."""
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    """The dotted name of a source file under :data:`PACKAGE_DIR`."""
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module name) of every import in ``source``, at any depth of the syntax tree.

    ``from X import Y`` yields ``X`` and ``X.Y`` (``Y`` may be a submodule: ``from rtc_mpu import
    mixer``); relative imports are resolved against ``module``; ``importlib.import_module`` and
    ``__import__`` calls count when their first argument is a string literal.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def violation(module: str, imported: str) -> str | None:
    """Why ``module`` must not import ``imported``, or None if it may."""
    for package, allowed in PLAIN_DATA.items():
        if not _within(module, package):
            continue
        if _within(imported, "rtc_mpu"):
            if not any(_within(imported, prefix) for prefix in allowed):
                return f"{package} may import only {', '.join(allowed)} of the project"
        elif imported.partition(".")[0] not in sys.stdlib_module_names:
            return f"{package} is plain data: the standard library only, no third-party package"
    for package, forbidden in FORBIDDEN.items():
        if _within(module, package):
            if any(_within(imported, allowed) for allowed in EXCEPTIONS.get(package, ())):
                continue
            for prefix in forbidden:
                if _within(imported, prefix):
                    return f"{package} must not import {prefix}"
    return None


def source_violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every forbidden import of ``source`` (the text of ``module``), as ``"module:line: ..."``."""
    found = []
    for line, imported in imported_names(source, module, is_package):
        reason = violation(module, imported)
        if reason is not None:
            found.append(f"{module}:{line}: imports {imported}: {reason}")
    return found


def test_the_package_follows_the_import_rules() -> None:
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(files) > 50, f"expected the whole package under {PACKAGE_DIR}"
    found = []
    for path in files:
        module = module_name(path)
        found += source_violations(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    assert not found, "forbidden imports:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("rtc_mpu.mixer.video.compositor", "import flask"),
        ("rtc_mpu.mixer.pipeline", "def run():\n    from celery import Celery\n"),
        ("rtc_mpu.mixer.pipeline", "from rtc_mpu import workers"),
        ("rtc_mpu.mixer.sources.base", "from ...workers.store import TaskStore"),
        ("rtc_mpu.mixer.audio.vad", "import importlib\nimportlib.import_module('rtc_mpu.cli.main')"),
        ("rtc_mpu.api.service", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import av\n"),
        ("rtc_mpu.api.tasks", "from PIL import Image"),
        ("rtc_mpu.api.rpc", "class C:\n    def m(self):\n        import numpy.typing\n"),
        ("rtc_mpu.api.app", "from rtc_mpu.mixer.overlays.text import FONT_FILES"),
        ("rtc_mpu.api.app", "import kombu"),
        ("rtc_mpu.spec.overlays", "from rtc_mpu.mixer.sources.base import Source"),
        (
            "rtc_mpu.spec.task",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rtc_mpu.api import app\n",
        ),
        ("rtc_mpu.spec.urls", "import redis"),
        ("rtc_mpu.spec", "from . import colors\nfrom ..workers import model\n"),
        ("rtc_mpu.layouts.tables", "from rtc_mpu.spec.task import TaskSpec"),
        ("rtc_mpu.layouts.schema", "import yaml"),
        ("rtc_mpu.workers.store", "def f():\n    from apiflask import APIFlask\n"),
        ("rtc_mpu.workers.mix_runner", "from rtc_mpu.api.service import MixService"),
        ("rtc_mpu.edge.app", "from flask import Flask"),
        ("rtc_mpu.edge.publishers", "from rtc_mpu.workers.settings import token_secret"),
        ("rtc_mpu.edge.app", "def f():\n    from rtc_mpu.api import whip\n"),
        ("rtc_mpu.edge.sdp", "import av"),
        ("rtc_mpu.edge.publishers", "from rtc_mpu.mixer.sources.janus import JanusSource"),
        ("rtc_mpu.edge.app", "from rtc_mpu.cli import edge"),
    ],
)
def test_a_forbidden_import_is_found(module: str, source: str) -> None:
    is_package = module in ("rtc_mpu.spec",)
    assert source_violations(source, module, is_package), f"{module} may not: {source!r}"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (
            "rtc_mpu.spec.overlays",
            "import enum\nfrom zoneinfo import ZoneInfo\nfrom rtc_mpu.layouts import SpecError",
        ),
        ("rtc_mpu.spec.task", "from .streams import SourceType\nfrom ..layouts import Layout"),
        ("rtc_mpu.mixer.video.compositor", "import av\nimport numpy\nfrom rtc_mpu.spec.task import CropMode"),
        (
            "rtc_mpu.workers.celery_app",
            "from celery import Celery\nfrom rtc_mpu.mixer.pipeline import Pipeline",
        ),
        ("rtc_mpu.api.app", "import redis\nfrom rtc_mpu.workers.model import TaskRecord"),
        ("rtc_mpu.api.app", "import avocado_helpers"),  # a prefix match is per dotted component
        ("rtc_mpu.cli.render", "import av\nfrom rtc_mpu.api.app import create_app"),
        (
            "rtc_mpu.edge.publishers",
            "import aiohttp\nfrom rtc_mpu.mixer.sources.janus_http import JanusSession\n"
            "from rtc_mpu.spec.tokens import verify_token",
        ),
        (
            "rtc_mpu.cli.edge",
            "from rtc_mpu.edge.app import run\nfrom rtc_mpu.stack.local_stack import StackConfig",
        ),
    ],
)
def test_an_allowed_import_passes(module: str, source: str) -> None:
    assert source_violations(source, module) == []


def _loaded_by(code: str) -> dict[str, list[str]]:
    """Run ``code`` in a fresh interpreter; it must print a JSON object, which is returned."""
    prelude = "import json, sys\nbefore = set(sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_the_api_process_loads_no_media_library_and_not_celery() -> None:
    loaded = _loaded_by(
        f"""
        from rtc_mpu.api.app import create_app

        create_app({{"MPU_AUTH_DISABLED": True}})
        # What the API imports on its first requests (the task store, custom layouts, settings).
        import rtc_mpu.workers.capacity, rtc_mpu.workers.layout_store, rtc_mpu.workers.model
        import rtc_mpu.workers.settings, rtc_mpu.workers.store

        roots = {{name.partition(".")[0] for name in sys.modules}}
        print(json.dumps({{
            "forbidden": sorted(roots & {set(MEDIA_LIBRARIES + CELERY)!r}),
            "project": sorted(n for n in sys.modules if n.startswith("rtc_mpu.")),
        }}))
        """
    )
    assert loaded["forbidden"] == [], f"the API process loads {loaded['forbidden']}"
    mixer = [name for name in loaded["project"] if _within(name, "rtc_mpu.mixer")]
    assert mixer == [], f"the API process loads {mixer}"
    assert "rtc_mpu.api.app" in loaded["project"]


def test_the_edge_process_loads_no_media_library_nor_flask() -> None:
    loaded = _loaded_by(
        f"""
        from rtc_mpu.edge.app import create_app
        from rtc_mpu.edge.settings import EdgeSettings

        create_app(EdgeSettings(token_secret="s" * 16))
        roots = {{name.partition(".")[0] for name in sys.modules}}
        print(json.dumps({{
            "forbidden": sorted(roots & {set(MEDIA_LIBRARIES + CELERY + FLASK) - {"aiohttp"}!r}),
            "project": sorted(n for n in sys.modules if n.startswith("rtc_mpu.")),
        }}))
        """
    )
    assert loaded["forbidden"] == [], f"the edge loads {loaded['forbidden']}"
    mixer = [name for name in loaded["project"] if _within(name, "rtc_mpu.mixer")]
    assert mixer == ["rtc_mpu.mixer", "rtc_mpu.mixer.sources", "rtc_mpu.mixer.sources.janus_http"], mixer


def test_the_spec_loads_only_the_standard_library_and_layouts() -> None:
    loaded = _loaded_by(
        """
        import pkgutil
        import sysconfig

        import rtc_mpu.spec

        for info in pkgutil.iter_modules(rtc_mpu.spec.__path__, "rtc_mpu.spec."):
            __import__(info.name)
        new = set(sys.modules) - before
        stdlib_dir = sysconfig.get_path("stdlib")
        site_dirs = (sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))


        def third_party(root):
            # Neither the standard library (by name, or by where it lives: _sysconfigdata_*) nor ours.
            if root in sys.stdlib_module_names or root == "rtc_mpu":
                return False
            origin = getattr(sys.modules.get(root), "__file__", None) or ""
            return not origin.startswith(stdlib_dir) or origin.startswith(site_dirs)


        print(json.dumps({
            "spec": sorted(n for n in new if n.startswith("rtc_mpu.spec.")),
            "third_party": sorted({r for r in (n.partition(".")[0] for n in new) if third_party(r)}),
            "project": sorted(
                n for n in new
                if n.startswith("rtc_mpu.") and not n.startswith(("rtc_mpu.spec", "rtc_mpu.layouts"))
            ),
        }))
        """
    )
    spec_modules = {module_name(path) for path in (PACKAGE_DIR / "spec").glob("*.py")} - {"rtc_mpu.spec"}
    assert set(loaded["spec"]) == spec_modules, "every module of rtc_mpu.spec was imported"
    assert loaded["third_party"] == [], f"rtc_mpu.spec loads {loaded['third_party']}"
    assert loaded["project"] == [], f"rtc_mpu.spec loads {loaded['project']}"
