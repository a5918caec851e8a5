"""Versions of an Icechunk repository: which commit to read, and the list of commits.

An Icechunk repository keeps every commit (snapshot) of its branches, and tags name some of
them (``zarrport grib ingest`` tags each cycle ``cycle-YYYYMMDDHH``; ``zarrport batch`` commits
each collection once per run that changed it). :class:`Version` says which one to read --
the tip of a branch (default ``main``), a tag, a snapshot id, or the last commit on a branch
at or before a time -- and turns it into Icechunk's read-only session
(``Repository.readonly_session``, icechunk 2.3), with one-line errors that name what exists
instead of Icechunk's multi-line ones. :func:`commits` lists a branch newest first, each
commit with the tags that point at it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from zarrport.errors import InvalidArgumentError, SourceNotFoundError

#: the branch read when none is named
DEFAULT_BRANCH = "main"

#: at most this many names are listed in an error message
_LISTED = 12


def parse_as_of(value: str | dt.datetime | dt.date | None) -> dt.datetime | None:
    """An ISO 8601 time (``2025-01-01``, ``2025-01-01T06:00``, ``...Z``, ``...+02:00``) or a
    datetime, as an aware UTC datetime; a naive one means UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError as err:
            raise InvalidArgumentError(
                f"as_of {value!r} is not an ISO 8601 time, e.g. 2025-01-01T06:00:00Z"
            ) from err
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise InvalidArgumentError(f"as_of must be a datetime or an ISO 8601 string, not "
                                   f"{type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def iso(t: dt.datetime) -> str:
    """A commit time as ISO 8601 UTC with a ``Z``."""
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _names(items: Any) -> str:
    items = sorted(items)
    if not items:
        return "none"
    shown = ", ".join(items[:_LISTED])
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


@dataclass(frozen=True)
class Version:
    """Which commit of a repository to read; all None means the tip of ``main``."""

    branch: str | None = None
    tag: str | None = None
    snapshot: str | None = None
    as_of: dt.datetime | None = None

    @classmethod
    def of(cls, branch: str | None = None, tag: str | None = None,
           snapshot: str | None = None, as_of: str | dt.datetime | None = None) -> Version:
        """Checked: at most one of tag / snapshot / branch, and as_of only with a branch."""
        when = parse_as_of(as_of)
        for name, value in (("branch", branch), ("tag", tag), ("snapshot", snapshot)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidArgumentError(f"{name} must be a non-empty name, not {value!r}")
        given = [n for n, v in (("tag", tag), ("snapshot", snapshot),
                                ("branch", branch)) if v is not None]
        if len(given) > 1:
            raise InvalidArgumentError(
                f"give at most one of tag, snapshot and branch, not {' and '.join(given)} "
                "(as_of combines with a branch)")
        if when is not None and (tag is not None or snapshot is not None):
            raise InvalidArgumentError(
                f"as_of picks a commit on a branch; it does not combine with "
                f"{'tag' if tag is not None else 'snapshot'}")
        return cls(branch=branch, tag=tag, snapshot=snapshot, as_of=when)

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.branch, self.tag, self.snapshot, self.as_of))

    def describe(self) -> str:
        if self.tag is not None:
            return f"tag {self.tag!r}"
        if self.snapshot is not None:
            return f"snapshot {self.snapshot}"
        text = f"branch {self.branch or DEFAULT_BRANCH!r}"
        return text + (f" as of {iso(self.as_of)}" if self.as_of is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {"branch": self.branch, "tag": self.tag, "snapshot": self.snapshot,
                "as_of": iso(self.as_of) if self.as_of is not None else None}

    def to_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`zarrport.open_dataset` that give this version."""
        return {"branch": self.branch, "tag": self.tag, "snapshot": self.snapshot,
                "as_of": self.as_of}

    def session(self, repo: Any, url: str) -> Any:
        """Icechunk's read-only session at this version of ``repo`` (found at ``url``)."""
        import icechunk

        try:
            if self.tag is not None:
                return repo.readonly_session(tag=self.tag)
            if self.snapshot is not None:
                return repo.readonly_session(snapshot_id=self.snapshot)
            branch = self.branch or DEFAULT_BRANCH
            if self.as_of is not None:
                return repo.readonly_session(branch=branch, as_of=self.as_of)
            return repo.readonly_session(branch=branch)
        except (icechunk.RefNotFoundError, icechunk.SnapshotNotFoundError,
                icechunk.InvalidInputError) as err:
            raise self._not_found(repo, url) from err

    def _not_found(self, repo: Any, url: str) -> SourceNotFoundError:
        """The one-line error for a version the repository does not have."""
        if self.tag is not None:
            return SourceNotFoundError(
                f"{url} has no tag {self.tag!r}; its tags: {_names(repo.list_tags())}",
                source=url)
        branches = set(repo.list_branches())
        if self.snapshot is not None:
            ids = [c.id for c in commits_of(repo, DEFAULT_BRANCH if DEFAULT_BRANCH in branches
                                            else sorted(branches)[0])][:5]
            return SourceNotFoundError(
                f"{url} has no snapshot {self.snapshot!r}; the newest: "
                f"{', '.join(ids)} (`zarrport history {url}` lists all)", source=url)
        branch = self.branch or DEFAULT_BRANCH
        if branch not in branches:
            return SourceNotFoundError(
                f"{url} has no branch {branch!r}; its branches: {_names(branches)}",
                source=url)
        first = commits_of(repo, branch)[-1]
        return SourceNotFoundError(
            f"{url}: nothing was committed on branch {branch!r} at or before "
            f"{iso(self.as_of) if self.as_of else '?'}; its first commit is "
            f"{first.id} at {iso(first.written_at)}", source=url)


@dataclass
class Commit:
    """One commit (Icechunk snapshot) of a branch."""

    id: str
    written_at: dt.datetime
    message: str
    parent_id: str | None = None
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "written_at": iso(self.written_at), "message": self.message,
                "parent_id": self.parent_id, "tags": list(self.tags)}


def _tags_by_snapshot(repo: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for tag in sorted(repo.list_tags()):
        out.setdefault(repo.lookup_tag(tag), []).append(tag)
    return out


def commits_of(repo: Any, branch: str = DEFAULT_BRANCH) -> list[Commit]:
    """The commits of ``branch`` in an open repository, newest first (the last is the
    repository's initial commit), each with the tags pointing at it."""
    tags = _tags_by_snapshot(repo)
    return [Commit(id=s.id, written_at=s.written_at, message=s.message or "",
                   parent_id=s.parent_id, tags=tags.get(s.id, []))
            for s in repo.ancestry(branch=branch)]


def open_repository(url: str, storage_options: dict | None = None) -> Any:
    """The Icechunk repository at ``url``, for reading its history (no chunk access)."""
    import icechunk

    from zarrport import storage
    from zarrport.errors import CorruptSourceError
    from zarrport.virtual.icechunk import quiet_icechunk

    quiet_icechunk()
    try:
        return icechunk.Repository.open(storage.icechunk_storage(url, storage_options))
    except Exception as err:
        raise CorruptSourceError(f"{url}: not a readable Icechunk repository ({err})",
                                 source=url) from err


def commits(url: str, *, branch: str | None = None,
            storage_options: dict | None = None) -> list[Commit]:
    """The commits of ``branch`` (default ``main``) of the Icechunk repository at ``url``,
    newest first; an unknown branch is a SourceNotFoundError naming the branches."""
    from zarrport import storage

    url = storage.normalize_url(url)
    repo = open_repository(url, storage_options)
    branch = branch or DEFAULT_BRANCH
    branches = set(repo.list_branches())
    if branch not in branches:
        raise SourceNotFoundError(
            f"{url} has no branch {branch!r}; its branches: {_names(branches)}", source=url)
    return commits_of(repo, branch)


def resolve(url: str, version: Version, storage_options: dict | None = None) -> Commit:
    """The commit ``version`` reads in the repository at ``url`` (errors as when opening)."""
    from zarrport import storage

    url = storage.normalize_url(url)
    repo = open_repository(url, storage_options)
    sid = version.session(repo, url).snapshot_id
    tags = _tags_by_snapshot(repo)
    info = next(iter(repo.ancestry(snapshot_id=sid)))
    return Commit(id=info.id, written_at=info.written_at, message=info.message or "",
                  parent_id=info.parent_id, tags=tags.get(info.id, []))


def history(url: str, *, branch: str | None = None, collection: str | None = None,
            storage_options: dict | None = None) -> dict[str, Any]:
    """The commits of an Icechunk repository, or of each collection of a batch output (or of
    the one named by ``collection``), newest first -- the model ``zarrport history --json``
    prints."""
    from zarrport import storage
    from zarrport.open import detect

    url = storage.normalize_url(url)
    branch = branch or DEFAULT_BRANCH
    kind = detect(url, storage_options)
    if kind == "batch":
        from zarrport.pipeline import output

        if collection is not None:
            cols = {collection: output.collection(url, collection, storage_options)}
        else:
            cols = output.collections(url, storage_options)
        listed: dict[str, Any] = {}
        for name, col in cols.items():
            col_kind = detect(col.url, storage_options) if col.exists else None
            listed[name] = {"url": col.url, "kind": col_kind, "commits": [
                c.to_dict() for c in commits(col.url, branch=branch,
                                             storage_options=storage_options)
            ] if col_kind == "icechunk" else []}
        return {"url": url, "kind": kind, "branch": branch, "collections": listed}
    if collection is not None:
        raise InvalidArgumentError(
            f"{url} is {kind}, not a batch output: --collection names a collection of a "
            "`zarrport batch` output", source=url)
    if kind != "icechunk":
        raise InvalidArgumentError(
            f"{url} is {kind}: only Icechunk repositories (and batch outputs, made of them) "
            "have a history", source=url)
    return {"url": url, "kind": kind, "branch": branch,
            "commits": [c.to_dict() for c in commits(url, branch=branch,
                                                     storage_options=storage_options)]}


__all__ = ["Commit", "DEFAULT_BRANCH", "Version", "commits", "history", "parse_as_of",
           "resolve"]
