"""The layout store: custom MPU layouts per AppId in Redis (CreateMPULayout and friends).

A custom layout has the same schema as a system layout (:class:`layouts.Layout`); its id is per
AppId, assigned ``FIRST_CUSTOM_LAYOUT_ID`` (100), 101, ... and never reused, not even after the
layout was deleted (system layouts are 1..13, so a LayoutId below 100 is never a custom one).

Keys (``{p}`` is the prefix, ``mpu`` by default, the same as the task store's so that deletes can
see the app's tasks):

- ``{p}:app:<app_id>:layouts``: hash, field = the layout id in decimal, value = the JSON of
  :meth:`Layout.to_dict <layouts.Layout.to_dict>` (written by Python's ``json``: the scripts never
  re-encode it, since Redis' Lua cjson would turn empty lists into ``{}`` and round floats to 14
  digits, so pane coordinates round-trip exactly). No TTL.
- ``{p}:app:<app_id>:layout_seq``: counter of the app's layout ids (the last id given). No TTL.
- read only: ``{p}:app:<app_id>:tasks`` and ``{p}:task:<app_id>/<task_id>`` of
  :mod:`rtc_mpu.workers.store`, to refuse deleting a layout that an active task lists in its LayoutIds.

Deleting a layout cannot race with a task that names it: the delete script refuses while an active
task lists the layout, and the task store's start and update scripts refuse a task naming a custom
layout that is not in ``{p}:app:<app_id>:layouts`` (:meth:`rtc_mpu.workers.store.TaskStore.layouts_key`),
each check atomic with its own write. Whichever runs first wins; the other is refused.

Every change is one Lua script (``rtc_mpu/workers/lua/layout_*.lua``, package data): create (limit
check, id, write), modify (existence check, write) and delete (in-use check, delete) are atomic on
the server. The delete script reads task records whose names it computes, so, like the task store,
this store works on a single Redis server (or a primary with replicas), not on Redis Cluster.

Errors: every Redis failure is raised as :class:`~rtc_mpu.workers.model.StoreUnavailableError` (the same
mapping as :mod:`rtc_mpu.workers.store`); invalid input as :class:`~layouts.SpecError`, before anything is
written.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from rtc_mpu.layouts import Layout, SpecError, layout_from_dict
from rtc_mpu.spec.text_rules import char_problem
from rtc_mpu.workers.model import StoreError
from rtc_mpu.workers.store import DEFAULT_TIMEOUT, _unavailable, load_script, redis_client

#: The first id given to an app's custom layouts (system layouts are 1..13).
FIRST_CUSTOM_LAYOUT_ID = 100
#: How many custom layouts one AppId may have at a time.
MAX_LAYOUTS_PER_APP = 1000
#: Longest layout name, in characters.
MAX_NAME_LENGTH = 64
#: Largest page of :meth:`LayoutStore.list`.
MAX_PAGE_SIZE = 100
#: How many TaskIds a :class:`LayoutInUseError` message names.
_IN_USE_NAMED = 5


class LayoutNotFoundError(StoreError):
    """No custom layout with this LayoutId for the AppId."""

    code, http_status = "InvalidLayout.NotFound", 404


class LayoutInUseError(StoreError):
    """The layout cannot be deleted: an active task of the AppId lists it in its LayoutIds.

    Attributes:
        task_ids: the TaskIds named in the message (at most 5, in the app's index order).
        count: how many active tasks list the layout.
    """

    code, http_status = "InvalidLayout.InUse", 409

    def __init__(self, message: str, task_ids: Sequence[str] = (), count: int = 0) -> None:
        super().__init__(message)
        self.task_ids = tuple(task_ids)
        self.count = count


class LayoutLimitError(StoreError):
    """The AppId already has ``MAX_LAYOUTS_PER_APP`` custom layouts."""

    code, http_status = "InvalidLayout.LimitExceeded", 400


def _dump(value: object) -> str:
    # ASCII escapes: any str (even one with lone surrogates) encodes; repr floats round-trip exactly.
    return json.dumps(value, separators=(",", ":"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _valid_app_id(app_id: object) -> bool:
    """An AppId this store can key on: a non-empty string without ``:`` or ``/``."""
    return isinstance(app_id, str) and bool(app_id) and ":" not in app_id and "/" not in app_id


def _custom_id(layout_id: object) -> bool:
    """True for an int (not a bool) a custom layout may have (>= ``FIRST_CUSTOM_LAYOUT_ID``)."""
    return (
        isinstance(layout_id, int) and not isinstance(layout_id, bool) and layout_id >= FIRST_CUSTOM_LAYOUT_ID
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise SpecError("InvalidParameter", f"Name must be a string, got {name!r}", ("name",))
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(
            "InvalidParameter", f"Name has {len(name)} characters; at most {MAX_NAME_LENGTH}", ("name",)
        )
    problem = char_problem(name)  # the NAME rule: names are shown in RPC XML answers and in logs
    if problem is not None:
        raise SpecError("InvalidParameter", f"Name {problem}", ("name",))
    return name


def _build(
    layout_id: int | None,
    name: object,
    panes: object,
    audio_mix_count: object,
    major_pane: object,
) -> Layout:
    """Validate a whole layout (name, then the schema) into a :class:`Layout`; errors name the layout
    by ``layout_id``, or by its name when ``layout_id`` is None (a new layout: stored with id 100
    until the store gives it its own)."""
    checked = _check_name(name)
    if isinstance(panes, (str, bytes)) or not isinstance(panes, Sequence):
        raise SpecError("InvalidLayoutID.Malformed", "Panes must be a list of panes", ("panes",))
    data: dict[str, Any] = {
        "id": FIRST_CUSTOM_LAYOUT_ID if layout_id is None else layout_id,
        "name": checked,
        "panes": list(panes),
        "major_pane": major_pane,
    }
    if audio_mix_count is not None:
        data["audio_mix_count"] = audio_mix_count
    where = f'the new layout "{checked}"' if layout_id is None else None
    return layout_from_dict(data, where=where)


def _parse(raw: bytes | str, app_id: str) -> Layout:
    try:
        return layout_from_dict(json.loads(raw))
    except (ValueError, TypeError, AttributeError) as exc:  # SpecError and JSONDecodeError are ValueErrors
        raise StoreError(
            f"corrupt layout of AppId {app_id!r} in Redis: {exc.__class__.__name__}: {exc}"
        ) from None


class LayoutStore:
    """Custom MPU layouts per AppId in Redis (see the module docstring for the keys).

    Args:
        client: a synchronous redis-py client. Give it socket timeouts (connect and read) and no
            automatic retries, as :meth:`from_url` does; responses may be bytes or str.
        prefix: prefix of every key; the same as the task store's, so that :meth:`delete` sees the
            app's active tasks.

    Raises:
        ValueError: the prefix is empty.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "mpu") -> None:
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        self.client = client
        self.prefix = prefix
        self._create = client.register_script(load_script("layout_create.lua"))
        self._modify = client.register_script(load_script("layout_modify.lua"))
        self._delete = client.register_script(load_script("layout_delete.lua"))

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT, prefix: str = "mpu") -> LayoutStore:
        """A store on a new client for ``url`` (``redis://host:port/db``).

        The client has ``timeout`` seconds as its connect and read timeouts and no automatic
        retries (a retried create could make two layouts), like :meth:`TaskStore.from_url
        <rtc_mpu.workers.store.TaskStore.from_url>`. No connection is made yet.

        Raises:
            ValueError: malformed URL, or an empty prefix.
        """
        return cls(redis_client(url, timeout), prefix=prefix)

    def close(self) -> None:
        """Close the client's connections (the store can still be used: it reconnects)."""
        self.client.close()

    # Key names -------------------------------------------------------------------------------

    def layouts_key(self, app_id: str) -> str:
        """The hash of the app's layouts (field = layout id, value = the layout's JSON)."""
        return f"{self.prefix}:app:{app_id}:layouts"

    def seq_key(self, app_id: str) -> str:
        """The counter of the app's layout ids."""
        return f"{self.prefix}:app:{app_id}:layout_seq"

    @staticmethod
    def _not_found(app_id: object, layout_id: object) -> LayoutNotFoundError:
        return LayoutNotFoundError(f"no custom layout {layout_id!r} for AppId {app_id!r}")

    def _found(self, app_id: object, layout_id: object) -> None:
        """Raise LayoutNotFoundError for ids no custom layout can have."""
        if not _valid_app_id(app_id) or not _custom_id(layout_id):
            raise self._not_found(app_id, layout_id)

    # Operations --------------------------------------------------------------------------------

    def create(
        self,
        app_id: str,
        *,
        name: str,
        panes: Sequence[Mapping[str, object]],
        audio_mix_count: int | None = None,
        major_pane: int | None = None,
    ) -> Layout:
        """Store a new custom layout under the app's next id (100, 101, ...; never reused).

        Args:
            app_id: the AppId.
            name: at most 64 characters (not necessarily unique).
            panes: pane mappings ``{"id", "x", "y", "width", "height", "zorder"}`` (coordinates are
                fractions of the canvas; ``zorder`` optional, 0 by default), 1 to 16 of them.
            audio_mix_count: how many audio sources are mixed (1..16); None = the schema's default.
            major_pane: the id of the main pane, or None.

        Returns:
            The stored layout, with its new id.

        Raises:
            SpecError: ``InvalidParameter`` (field ``("app_id",)`` or ``("name",)``) for a bad AppId or name
                (too long, or a character :mod:`rtc_mpu.spec.text_rules` refuses in names), or
                ``InvalidLayoutID.Malformed`` from :func:`layouts.layout_from_dict`; nothing is
                written then.
            LayoutLimitError: the app already has ``MAX_LAYOUTS_PER_APP`` layouts.
            StoreUnavailableError: Redis failed.
        """
        if not _valid_app_id(app_id):
            raise SpecError("InvalidParameter", f"invalid AppId {app_id!r}", ("app_id",))
        layout = _build(None, name, panes, audio_mix_count, major_pane)
        body = layout.to_dict()
        del body["id"]
        with _unavailable():
            reply = self._create(
                keys=[self.layouts_key(app_id), self.seq_key(app_id)],
                args=[MAX_LAYOUTS_PER_APP, FIRST_CUSTOM_LAYOUT_ID, _dump(body)],
            )
        if _text(reply[0]) == "limit":
            raise LayoutLimitError(
                f"AppId {app_id} already has {MAX_LAYOUTS_PER_APP} custom layouts (the maximum)"
            )
        return dataclasses.replace(layout, id=int(reply[1]))

    def modify(
        self,
        app_id: str,
        layout_id: int,
        *,
        name: str | None = None,
        panes: Sequence[Mapping[str, object]] | None = None,
        audio_mix_count: int | None = None,
        major_pane: int | None = None,
    ) -> Layout:
        """Change a custom layout: each argument that is not None replaces the stored value
        (``panes`` replaces all the panes, and comes with its own ``major_pane``: None then means
        no major pane); the others are kept.

        The result is validated as a whole before anything is written (e.g. a kept ``major_pane``
        must be one of new ``panes``). Two concurrent modifies of one layout: the last one wins.

        Returns:
            The stored layout.

        Raises:
            LayoutNotFoundError: no such custom layout for the AppId (also for an invalid AppId, a
                LayoutId that is not an int or is below 100, or a layout deleted meanwhile).
            SpecError: as for :meth:`create`; nothing is written then.
            StoreUnavailableError: Redis failed.
        """
        current = self.get(app_id, layout_id)
        layout = _build(
            layout_id,
            current.name if name is None else name,
            current.to_dict()["panes"] if panes is None else panes,
            current.audio_mix_count if audio_mix_count is None else audio_mix_count,
            current.major_pane if major_pane is None and panes is None else major_pane,
        )
        with _unavailable():
            written = self._modify(keys=[self.layouts_key(app_id)], args=[layout_id, _dump(layout.to_dict())])
        if not written:
            raise self._not_found(app_id, layout_id)
        return layout

    def delete(self, app_id: str, layout_id: int) -> None:
        """Delete a custom layout, unless an active task of the same AppId lists it in its LayoutIds
        (checked and deleted in one atomic step; a task starting or updated at the same moment is
        either seen here or refused by the task store, see the module docstring). Its id is not
        given again.

        Raises:
            LayoutNotFoundError: no such custom layout for the AppId (also for an invalid AppId or
                a LayoutId that is not an int or is below 100).
            LayoutInUseError: an active task of the AppId lists the layout; the message names up to
                5 of those tasks.
            StoreUnavailableError: Redis failed.
        """
        self._found(app_id, layout_id)
        with _unavailable():
            reply = self._delete(
                keys=[self.layouts_key(app_id), f"{self.prefix}:app:{app_id}:tasks"],
                args=[layout_id, f"{self.prefix}:task:{app_id}/", _IN_USE_NAMED],
            )
        outcome = _text(reply[0])
        if outcome == "missing":
            raise self._not_found(app_id, layout_id)
        if outcome == "in_use":
            count = int(reply[1])
            task_ids = [_text(t) for t in reply[2:]]
            more = f" and {count - len(task_ids)} more" if count > len(task_ids) else ""
            raise LayoutInUseError(
                f"layout {layout_id} is used by active task(s) {', '.join(task_ids)}{more} of AppId {app_id}",
                task_ids,
                count,
            )

    def get(self, app_id: str, layout_id: int) -> Layout:
        """One custom layout.

        Raises:
            LayoutNotFoundError: no such custom layout for the AppId (also for an invalid AppId or
                a LayoutId that is not an int or is below 100: system layouts are not stored here).
            StoreError: the stored JSON is not a valid layout.
            StoreUnavailableError: Redis failed.
        """
        self._found(app_id, layout_id)
        with _unavailable():
            raw = self.client.hget(self.layouts_key(app_id), str(layout_id))
        if raw is None:
            raise self._not_found(app_id, layout_id)
        return _parse(raw, app_id)

    def get_many(self, app_id: str, layout_ids: Iterable[int]) -> dict[int, Layout]:
        """The custom layouts among ``layout_ids`` that exist, by id, in one round trip (HMGET).

        Ids below 100 (system layouts), unknown ids and non-int ids are simply absent from the
        result, and so is everything for an invalid AppId (no Redis call then, nor when no id can be
        a custom one).

        Raises:
            StoreError: a stored JSON is not a valid layout.
            StoreUnavailableError: Redis failed.
        """
        wanted = sorted({i for i in layout_ids if _custom_id(i)})
        if not wanted or not _valid_app_id(app_id):
            return {}
        with _unavailable():
            values = self.client.hmget(self.layouts_key(app_id), [str(i) for i in wanted])
        return {i: _parse(raw, app_id) for i, raw in zip(wanted, values, strict=True) if raw is not None}

    def list(
        self,
        app_id: str,
        *,
        layout_id: int | None = None,
        name: str | None = None,
        page_num: int = 1,
        page_size: int = 10,
    ) -> tuple[int, list[Layout]]:
        """The app's custom layouts ordered by id, one page of them.

        Args:
            app_id: the AppId (an invalid one has no layouts).
            layout_id: only this layout (if it exists), or None for all.
            name: only the layouts with exactly this name, or None for all.
            page_num: 1-based page number; a page past the end is empty.
            page_size: layouts per page, 1..100.

        Returns:
            (how many layouts match the filters, the layouts of the requested page).

        Raises:
            ValueError: ``page_num`` < 1 or ``page_size`` outside 1..100 (checked first).
            StoreError: a stored JSON is not a valid layout.
            StoreUnavailableError: Redis failed.
        """
        if isinstance(page_num, bool) or not isinstance(page_num, int) or page_num < 1:
            raise ValueError(f"page_num must be an integer >= 1, got {page_num!r}")
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not 1 <= page_size <= MAX_PAGE_SIZE
        ):
            raise ValueError(f"page_size must be an integer in 1..{MAX_PAGE_SIZE}, got {page_size!r}")
        if not _valid_app_id(app_id):
            return 0, []
        if layout_id is not None:
            found = self.get_many(app_id, [layout_id])
            layouts = list(found.values())
        else:
            with _unavailable():
                flat = self.client.hgetall(self.layouts_key(app_id))
            layouts = sorted((_parse(raw, app_id) for raw in flat.values()), key=lambda item: item.id)
        if name is not None:
            layouts = [item for item in layouts if item.name == name]
        start = (page_num - 1) * page_size
        return len(layouts), layouts[start : start + page_size]
