"""What ``zarrport serve`` may open: URLs under its ``--allow`` roots, nothing else.

Every ``url`` a request names goes through :meth:`AllowList.check` *before* anything is
opened or any connection is attempted; a refusal is a
:class:`~zarrport.errors.ForbiddenError` (HTTP 403 with a JSON reason):

- **local roots** (``--allow /data/archive``): the path is resolved with
  :func:`os.path.realpath` -- ``..`` segments and symlinks included -- and must lie inside the
  realpath of a root. A symlink inside a root that points out of it is refused; so is
  ``file:///etc/passwd`` and any other spelling of a path outside.
- **remote roots** (``--allow s3://bucket/prefix/``, ``az://``, ``gs://``, ``http(s)://host/``):
  same scheme, same bucket/host (port included) and a path below the root's path, after
  removing ``.`` and refusing ``..`` segments and percent-encoded dots or slashes. There is no
  DNS lookup: ``http://169.254.169.254/`` is refused because no root names that host.
- Anything else (another scheme, a host no root names, control characters, backslashes and
  percent-encoded dots or slashes in any URL or path) is refused.

What a dataset *points to* is checked too, when it is opened: the chunk targets of kerchunk
references and the virtual chunk containers of an Icechunk repository must lie under the
roots, so a reference file inside a root cannot make the server read ``/etc/shadow`` or an
address on the internal network.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from zarrport import storage
from zarrport.errors import ForbiddenError, InvalidArgumentError

__all__ = ["AllowList"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# %2e (.), %2f (/), %5c (\) in a URL path: a second decoding downstream could turn them into
# a traversal; nothing legitimate in an archive path needs them (%252e: encoded twice)
_ENCODED_TRAVERSAL = re.compile(r"%(25)*(2e|2f|5c)", re.IGNORECASE)
# encoded control characters, '?' and '#': the checked path would not be the one opened
_ENCODED_OTHER = re.compile(r"%(25)*([01][0-9a-f]|7f|3f|23)", re.IGNORECASE)


@dataclass(frozen=True)
class _Root:
    scheme: str  # "file" or a remote scheme
    netloc: str  # bucket / container / host[:port]; "" for file
    path: str  # absolute, no trailing slash ("" is the bucket's root)

    def contains(self, scheme: str, netloc: str, path: str) -> bool:
        if scheme != self.scheme or netloc != self.netloc:
            return False
        if self.scheme == "file" and self.path == "/":
            return True
        return path == self.path or path.startswith(self.path + "/")

    def __str__(self) -> str:
        if self.scheme == "file":
            return self.path
        return f"{self.scheme}://{self.netloc}{self.path}/"


class AllowList:
    """The roots a server opens; build with ``AllowList(["/data", "s3://bucket/archive/"])``."""

    def __init__(self, roots: Iterable[str]):
        parsed = []
        for root in roots:
            if not str(root).strip():
                raise InvalidArgumentError("an --allow root is empty")
            url = storage.normalize_url(str(root))
            if url.startswith("file://"):
                path = url.removeprefix("file://")
                if not os.path.isdir(path):
                    raise InvalidArgumentError(f"--allow {root}: not an existing directory")
                parsed.append(_Root("file", "", os.path.realpath(path).rstrip("/") or "/"))
            else:
                scheme, _, rest = url.partition("://")
                netloc, _, path = rest.partition("/")
                clean = _clean_remote_path(path, url)
                parsed.append(_Root(scheme, netloc, clean))
        if not parsed:
            raise InvalidArgumentError("no --allow root: name the directories or URL prefixes "
                                       "the server may open")
        self.roots: tuple[_Root, ...] = tuple(dict.fromkeys(parsed))

    def __repr__(self) -> str:
        return f"AllowList({[str(r) for r in self.roots]!r})"

    @property
    def local_roots(self) -> list[str]:
        return [r.path for r in self.roots if r.scheme == "file"]

    def check(self, url: str) -> str:
        """The normalised URL of ``url`` if it lies under a root; else :class:`ForbiddenError`.

        Pure string and local-filesystem work: nothing remote is contacted.
        """
        if not isinstance(url, str) or not url.strip():
            raise InvalidArgumentError("the dataset URL is empty")
        if _CONTROL.search(url):
            raise ForbiddenError("the dataset URL contains control characters")
        if len(url) > 2048:
            raise ForbiddenError("the dataset URL is longer than 2048 characters")
        if "::" in url:  # fsspec's URL chaining (simplecache::https://...): never a path
            raise ForbiddenError(f"{_short(url)}: chained URLs (::) are not allowed")
        if _ENCODED_OTHER.search(url):
            raise ForbiddenError(f"{_short(url)}: encoded control characters, '?' or '#' are "
                                 "not allowed in a dataset URL")
        if _ENCODED_TRAVERSAL.search(url) or "\\" in url:  # local paths too: a file://
            # URL handed to a library that percent-decodes it would climb out of the root
            raise ForbiddenError(f"{_short(url)}: encoded dots, slashes or backslashes are "
                                 "not allowed in a dataset URL")
        try:
            normal = storage.normalize_url(url)
        except InvalidArgumentError as err:
            raise ForbiddenError(f"{_short(url)} is not allowed: {err}") from None
        scheme, _, rest = normal.partition("://")
        if scheme == "file":
            path = os.path.realpath(rest)
            for root in self.roots:
                if root.contains("file", "", path):
                    return "file://" + path
            raise ForbiddenError(f"{_short(url)} is outside the directories this server "
                                 "opens (--allow)")
        netloc, _, path = rest.partition("/")
        clean = _clean_remote_path(path, url, forbid=True)
        for root in self.roots:
            if root.contains(scheme, netloc, clean):
                return f"{scheme}://{netloc}{clean}"
        raise ForbiddenError(f"{_short(url)} is outside the locations this server opens "
                             "(--allow)")

    def check_target(self, url: str, *, dataset: str) -> None:
        """A chunk target of ``dataset`` (a reference or a virtual chunk container)."""
        try:
            self.check(url)
        except ForbiddenError:
            raise ForbiddenError(
                f"{_short(dataset)} reads data from {_short(url)}, outside the locations this "
                "server opens (--allow)") from None
        except InvalidArgumentError as err:
            raise ForbiddenError(f"{_short(dataset)} reads data from a target that is not a "
                                 f"URL ({err})") from None


def _clean_remote_path(path: str, url: str, *, forbid: bool = False) -> str:
    """``/a/b`` from ``a/./b/``; ``..`` (plain or encoded) raises."""
    if _ENCODED_TRAVERSAL.search(path) or "\\" in path:
        raise ForbiddenError(f"{_short(url)}: encoded dots, slashes or backslashes are not "
                             "allowed in a dataset URL")
    path = path.split("?", 1)[0].split("#", 1)[0]
    parts = [p for p in unquote(path).split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ForbiddenError(f"{_short(url)}: '..' is not allowed in a remote dataset URL")
    return ("/" + posixpath.join(*parts)) if parts else ""


def _short(url: str) -> str:
    url = _CONTROL.sub("?", url)
    return url if len(url) <= 200 else url[:197] + "..."
