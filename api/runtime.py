"""Composition: settings in, a running store + engine + projector out.

The HTTP app and the command line both build their process through here, so
they wire the same parts the same way.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Self

from actors.bus import FrameBus
from api.settings import Settings, SettingsError
from eventstore import SqlStore, open_store
from flows.catalog import BUILTIN_MODULES, FlowRegistry, builtin, flows_in

# The engine and the backends are imported when an engine starts, the read tables' modules when the
# projector or the read model does: a command that only reads the log (replay, plan) needs none of them
# (docs/PERFORMANCE.md, "CLI start-up").
if TYPE_CHECKING:
    from actors.engine import Engine
    from projections.queries import ReadModel
    from projections.runner import Projector

log = logging.getLogger(__name__)


class FlowsImportError(ImportError):
    """A module named in --flows / BATON_FLOWS could not be imported, or holds no flow."""


class StartError(RuntimeError):
    """The engine refused to start (e.g. another live process already goes by this node name)."""


def importable_from_cwd() -> None:
    """Let modules in the working directory import, as they do under ``python -m``.

    The ``baton`` console script starts with its own directory on sys.path,
    not the working directory, so ``--flows myflows`` next to ``myflows.py``
    failed unless PYTHONPATH was set. The directory is added as an absolute
    path (a later chdir does not change it) and at the end, where ``python
    -m`` puts it first: a stray ``json.py`` in the working directory must not
    shadow the standard library or an installed package inside baton.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def read_personas(folder: str) -> dict[str, str]:
    """The personas in ``folder``: ``NAME.md`` -> its text, in the format of the shipped ones.

    Raises SettingsError naming the folder or the file: a folder that is not
    there, a file name that is not a plain lowercase word, an empty file.
    Files that do not end in ``.md`` are ignored (a README.txt, an editor's
    backup).
    """
    from actors.agents.personas import valid_name  # imports the backends: only when there are personas to read

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise SettingsError(f"BATON_PERSONAS / --personas {folder!r}: no such folder")
    texts: dict[str, str] = {}
    for path in sorted(root.glob("*.md")):
        name = path.name[: -len(".md")]
        if not valid_name(name):
            raise SettingsError(f"BATON_PERSONAS: {path}: a persona's file name is lowercase letters, digits and "
                                f"dashes, then .md (e.g. release-captain.md)")
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise SettingsError(f"BATON_PERSONAS: {path} is empty; a persona is its system prompt")
        texts[name] = text
    return texts


def load_personas(folder: str) -> None:
    """Add the personas of ``folder`` for this process (before any flows module is imported)."""
    if not folder:
        return
    from actors.agents.personas import add_personas

    try:
        add_personas(read_personas(folder))
    except ValueError as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(f"BATON_PERSONAS / --personas {folder!r}: {exc}") from None


def load_registry(modules: Iterable[str], *, personas: str = "") -> FlowRegistry:
    """The built-in catalogue plus every Flow found in ``modules`` (imported from the working directory too).

    ``personas`` names a folder of the person's own personas, added first so
    that the flows of ``modules`` may name them.

    A name is one flow: a module's flow named like a built-in one, or like
    another module's, is refused (FlowsImportError naming both modules)
    rather than silently replacing it. The very same Flow object found
    twice (a module importing another's flow) is not a clash.
    """
    load_personas(personas)
    registry = builtin()
    modules = list(modules)
    if modules:
        importable_from_cwd()
    origin = {flow.name: f"flows.catalog.{name}" for name in BUILTIN_MODULES
              for flow in flows_in(importlib.import_module(f"flows.catalog.{name}"))}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise FlowsImportError(
                f"cannot import flows module {name!r} (BATON_FLOWS / --flows): {type(exc).__name__}: {exc}"
            ) from exc
        found = flows_in(module)
        if not found:
            raise FlowsImportError(f"flows module {name!r} defines no Flow at its top level")
        for flow in found:
            if flow.name in registry and registry.get(flow.name) is not flow:
                raise FlowsImportError(
                    f"flows module {name!r} defines a flow named {flow.name!r}, but module "
                    f"{origin[flow.name]!r} already has one (BATON_FLOWS / --flows); rename one of them")
            registry.register(flow)
            origin.setdefault(flow.name, name)
    return registry


_FROZEN = False


def _freeze_once() -> None:
    """Take what the process imported and opened before its first engine out of the collector's full
    passes (``gc.freeze``), once: it lives as long as the process, and a start that registers many
    runs set off full passes over it (10,000 parked runs: 50-90 ms of a start's recovery,
    docs/PERFORMANCE.md, issue 15)."""
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.freeze()


class Runtime:
    """One baton process: store, flows, engine, projector and read model.

    ``start(engine=False)`` serves reads only (``baton runs``, ``baton show``).
    """

    def __init__(self, settings: Settings, *, store: SqlStore | None = None) -> None:
        """Load the flows and open the store; nothing runs yet.

        Raises FlowsImportError, StoreUnavailableError (the database cannot be
        reached), or SettingsError for a store URL no backend supports.
        """
        self.settings = settings
        self.registry = load_registry(settings.flows, personas=settings.personas)
        options = settings.store_options() if store is None else {}  # a bad key file: its own setting's error
        try:
            self.store = store or open_store(settings.db, **options)
        except ValueError as exc:  # the URL is wrong, not the database
            raise SettingsError(f"BATON_DB / --db: {exc}") from None
        self.bus = FrameBus()
        self.engine: Engine | None = None
        self.projector: Projector | None = None
        self.read_model: ReadModel | None = None

    def start(self, *, engine: bool = True, projector: bool = True, recover: bool = True) -> Runtime:
        """Start the parts asked for; the projector first, so reads are ready.

        ``recover=False`` starts an engine that drives only the runs it is told
        about (a CLI command), leaving other unfinished runs to ``baton serve``.
        A part that fails to start (a backend refusing its configuration,
        StartError from the engine) stops every part started before it and
        closes the store, then its error propagates: a failed start leaves
        nothing running.
        """
        from projections.queries import ReadModel
        from projections.runner import Projector

        try:
            if projector:
                self.projector = Projector(self.store).start()
            self.read_model = ReadModel(self.store.database, self.projector,
                                        read=getattr(self.store, "read_sql", None))
            if engine:
                self.engine = self._engine(recover)
        except BaseException:
            self.stop()
            raise
        return self

    def _engine(self, recover: bool) -> Engine:
        from actors.agents import make_backend
        from actors.engine import Engine
        from projections.queries import ReadModel

        _freeze_once()
        s = self.settings
        backend = make_backend(
            s.agent,
            openai_base_url=s.openai_base_url,
            openai_api_key=s.openai_api_key,
            model=s.model,
            cli_command=s.cli_command,
            offline_delay_s=s.offline_delay_s,
            openai_read_timeout_s=s.openai_read_timeout_s,
        )
        config = dataclasses.replace(s.engine_config(), recover=recover)
        try:
            # Recovery lists the runs not ended from the read tables (then the log after their
            # checkpoint), not from the whole log: its cost follows the unfinished runs.
            reads = self.read_model or ReadModel(self.store.database)
            engine = Engine(self.store, self.registry, config, backend=backend, bus=self.bus,
                            open_runs=reads.open_runs)
        except BaseException:
            backend.close()
            raise
        try:
            return engine.start()
        except RuntimeError as exc:
            engine.stop()  # its step threads, clock and backend
            raise StartError(f"the engine cannot start: {exc}") from exc
        except BaseException:
            engine.stop()
            raise

    def stop(self) -> None:
        """Stop the engine, then the projector, then close the store."""
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        if self.projector is not None:
            self.projector.stop()
            self.projector = None
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
