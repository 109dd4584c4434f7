"""One reliable file download: cache, resume, retry, verify, atomic rename.

Every data source (``foldnet.data.sources``: RCSB/wwPDB entries, CATH lists,
domains and archives, the PDNet tarball) goes through :func:`download`, so the
failure handling lives in one place:

* Cache: an existing ``dest`` (whose checksum matches, when one is given) is
  returned without touching the network.
* Partial data: bytes go to ``dest + ".part"``. After a dropped connection the
  next attempt asks for the rest with an HTTP range request
  (``Range: bytes=<n>-``, RFC 9110 section 14) and appends when the server
  answers ``206 Partial Content``; a ``200`` means the server ignored the range,
  so the part file is truncated and the transfer restarts. A ``.part`` left by
  an earlier, interrupted call is resumed the same way.
* Retries: connection resets, timeouts, truncated bodies (fewer bytes than
  ``Content-Length``), ``408/425/429`` and ``5xx`` are retried with exponential
  backoff (``backoff * 2**k`` seconds). A ``429`` / ``503`` with ``Retry-After``
  (seconds or an HTTP date, RFC 9110 section 10.2.3) waits that long instead, up to
  ``MAX_RETRY_AFTER_S``; a server asking for more fails at once, saying so.
* Stalls: ``timeout`` bounds the connect and every read, so a server that accepts
  and then sends nothing fails with "no data for N s" instead of hanging. ``404/410`` and other ``4xx`` fail at
  once: asking again will not make the file appear.
* Offline: DNS failure, connection refused and unreachable networks raise
  :class:`OfflineError` at once, with a message on how to use a local copy.
* Verification before the rename: size, optional SHA-256 / MD5, the gzip CRC of
  ``.gz`` / ``.tgz`` payloads (RCSB and CATH publish no checksums, so the gzip
  trailer is the only end-to-end integrity check there is), and an optional
  content check (e.g. "is a PDB file, not an HTML error page").
* Atomicity: ``dest`` appears only through ``os.replace`` of a verified file,
  so readers never see a half-written download.

Local mirrors work too: a ``file://`` URL or a plain path is copied through the
same verification.

Standard library only (``urllib``): no extra dependency for users who only
need to fetch data.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable, Optional, Union

from foldnet.common import atomic

PathLike = Union[str, os.PathLike]
Validator = Callable[[Path], None]


@dataclasses.dataclass(frozen=True)
class NetworkPolicy:
    """How hard a download tries: the one set of network options every fetch passes through.

    Attributes:
      retries: how many times a transient failure is retried (``retries + 1`` attempts at most).
      backoff: seconds before the first retry; doubled for each further retry.
      timeout: socket timeout in seconds for connecting and for each read.
      progress: show a tqdm progress bar (for large archives).
    """

    retries: int = 3
    backoff: float = 0.5
    timeout: float = 30.0
    progress: bool = False

    @classmethod
    def of(cls, policy: Optional["NetworkPolicy"] = None, **fields: Any) -> "NetworkPolicy":
        """``policy`` (default: the defaults) with the given fields replaced (``retries=0``...)."""
        return dataclasses.replace(policy or cls(), **fields)

log = logging.getLogger(__name__)

USER_AGENT = "foldnet-fetch/0.1 (+https://github.com/foldnet; python-urllib)"
CHUNK = 1 << 16
# Statuses worth asking again for: request timeout, too early, rate limited, server-side trouble.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_OFFLINE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
# The longest Retry-After wait honoured; a server asking for longer fails the item at once.
MAX_RETRY_AFTER_S = 120.0


def retry_after_seconds(headers) -> Optional[float]:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP-date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - now).total_seconds())


class DownloadError(RuntimeError):
    """A download that did not produce a verified file; the message names the URL."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class NotFoundError(DownloadError):
    """The server answered 404/410: the file is not there (wrong ID, version or base URL)."""


class OfflineError(DownloadError):
    """The server cannot be reached at all (DNS failure, connection refused, no route)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected SHA-256 / MD5 or are corrupt."""


def offline_hint(dest: PathLike) -> str:
    """What to do when the server cannot be reached (part of every OfflineError message)."""
    return (
        "this machine seems to be offline or the server is unreachable. Either copy the file "
        f"(downloaded elsewhere) to {dest}, point FOLDNET_DATA (or data_root=... / cache_dir=...) "
        "at a folder that already holds the downloads, or set base_url=... to a reachable mirror "
        "(http(s)://... or file:///path/to/a/local/copy)"
    )


@dataclasses.dataclass(frozen=True)
class DownloadInfo:
    """What :func:`download_with_info` did.

    Attributes:
      path: the verified file.
      cached: True when ``path`` already existed and no request was made.
      nbytes: size of the downloaded payload in bytes (before optional gunzip).
      attempts: number of HTTP requests made (0 when cached).
      resumed: True when at least one range request continued a partial file.
    """

    path: Path
    cached: bool
    nbytes: int
    attempts: int
    resumed: bool


class _Retryable(Exception):
    """Internal: a transfer failure worth another attempt."""


def part_path(dest: PathLike) -> Path:
    """The partial-download file used for ``dest`` (``dest`` + ``.part``)."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def file_digest(path: PathLike, algorithm: str) -> str:
    """Hex digest of a file, read in chunks (files can be gigabytes).

    Args:
      path: file to hash.
      algorithm: a ``hashlib`` name such as ``"sha256"`` or ``"md5"``.
    Returns:
      Lowercase hexadecimal digest.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksum_problem(path: Path, sha256: Optional[str], md5: Optional[str]) -> Optional[str]:
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            got = file_digest(path, algorithm)
            if got != expected.strip().lower():
                return f"{algorithm} mismatch: expected {expected.strip().lower()}, got {got}"
    return None


def _gzip_problem(path: Path) -> Optional[str]:
    """Read a gzip file to the end so its CRC-32 and length trailer are checked."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as e:
        return f"corrupt gzip data ({e})"
    return None


def _offline_reason(reason: object) -> bool:
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS


def _local_source(url: str) -> Optional[Path]:
    """The local file behind a ``file://`` URL or a plain path; None for network URLs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(url)
    return None


def _transfer(url: str, part: Path, offset: int, validators: dict, timeout: float,
              progress: bool) -> tuple[int, bool]:
    """One HTTP request that writes (or appends) the body to ``part``.

    ``validators["tag"]`` carries the ETag / Last-Modified of the first full response across
    attempts, even failed ones, so that a resume can say ``If-Range``.

    Returns:
      (bytes in ``part`` afterwards, whether it appended to an existing prefix).
    Raises:
      _Retryable on transient failures; urllib errors are left to the caller to classify.
    """
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validators.get("tag"):
            # If the file changed since the bytes we hold were sent, the server sends it whole
            # (200) instead of splicing the new version's tail onto the old head.
            headers["If-Range"] = validators["tag"]
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        status = getattr(resp, "status", 200) or 200
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        appended = False
        if status == 206 and offset:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != offset:
                # A range we did not ask for: drop the prefix and fetch the whole file again.
                part.unlink(missing_ok=True)
                raise _Retryable(f"server sent range {resp.headers.get('Content-Range')!r} for offset {offset}")
            mode, start, appended = "ab", offset, True
        elif status == 200:
            mode, start = "wb", 0
            etag = resp.headers.get("ETag")  # If-Range needs a strong validator: no W/ ETags
            validators["tag"] = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")
        else:
            raise _Retryable(f"unexpected HTTP status {status}")
        got = 0
        bar = _progress_bar(url, expected, start) if progress else None
        # read1: at most one socket read per call, so bytes that arrived before a timeout or a
        # reset are already on disk (read() would buffer them and lose them with the exception).
        read = getattr(resp, "read1", resp.read)
        part.parent.mkdir(parents=True, exist_ok=True)  # only now: a failed fetch leaves no folders
        try:
            with open(part, mode) as fh:
                while True:
                    block = read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
        if expected is not None and got < expected:
            # http.client returns a short body without raising when the peer closes early.
            raise _Retryable(f"connection closed after {got} of {expected} bytes")
        return start + got, appended


def _progress_bar(url: str, expected: Optional[int], start: int):
    from tqdm import tqdm  # only for interactive downloads of large archives

    total = None if expected is None else expected + start
    return tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=Path(urllib.parse.urlparse(url).path).name)


def _finish(part: Path, dest: Path, url: str, gunzip: bool) -> None:
    if gunzip:
        with atomic.atomic_path(dest) as tmp:
            with gzip.open(part, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        part.unlink()
    else:
        os.replace(part, dest)


def _verify(part: Path, url: str, sha256, md5, check_gzip: bool, validate: Optional[Validator]) -> None:
    """Raise ChecksumError / DownloadError (and delete the part) when the payload is wrong."""
    problem = _checksum_problem(part, sha256, md5)
    if problem is None and check_gzip:
        problem = _gzip_problem(part)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise ChecksumError(url, problem + "; the partial file was deleted")
    if validate is not None:
        try:
            validate(part)
        except (ValueError, OSError, EOFError) as e:
            part.unlink(missing_ok=True)
            raise DownloadError(url, f"downloaded file is not what was expected: {e}") from None


def download_with_info(
    url: str,
    dest: PathLike,
    *,
    sha256: Optional[str] = None,
    md5: Optional[str] = None,
    resume: bool = True,
    gunzip: bool = False,
    validate: Optional[Validator] = None,
    policy: Optional[NetworkPolicy] = None,
    **policy_fields: Any,
) -> DownloadInfo:
    """Download ``url`` to ``dest`` (see the module docstring for the policy) and say how.

    Args:
      url: ``http(s)://`` URL, ``file://`` URL or local path of the payload.
      dest: final path; its parent is created when the first bytes arrive.
      sha256: expected SHA-256 hex digest of the payload (the downloaded bytes), if known.
      md5: expected MD5 hex digest of the payload, if known (CATH and PDB mirrors publish MD5s).
      policy: retries, backoff, timeout, progress (``NetworkPolicy``; default: its defaults).
      policy_fields: single ``NetworkPolicy`` fields replaced for this call (``retries=0``).
      resume: continue a ``.part`` file with a range request instead of starting over.
      gunzip: the payload is gzip; store it decompressed at ``dest``. Checksums refer to the
        compressed payload, so an existing decompressed ``dest`` is trusted as is.
      validate: called with the complete (still compressed) ``.part`` path; a ValueError means the
        payload is wrong (e.g. an HTML error page), which fails without retrying.
    Returns:
      DownloadInfo with the path of the verified file.
    Raises:
      NotFoundError: HTTP 404/410 or a missing local file (no retries).
      OfflineError: the host cannot be reached (no retries).
      ChecksumError: the payload does not match a checksum or is corrupt gzip.
      DownloadError: any other failure, after ``retries`` retries where retrying makes sense.
    """
    dest = Path(dest)
    net = NetworkPolicy.of(policy, **policy_fields)
    retries, backoff, timeout, progress = net.retries, net.backoff, net.timeout, net.progress
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if dest.exists():
        problem = None if gunzip else _checksum_problem(dest, sha256, md5)
        if problem is None:
            return DownloadInfo(dest, True, dest.stat().st_size, 0, False)
        log.warning("%s: cached file is stale (%s); downloading again", dest, problem)
    part = part_path(dest)
    check_gzip = gunzip or dest.name.endswith((".gz", ".tgz")) or url.endswith((".gz", ".tgz"))

    local = _local_source(url)
    if local is not None:
        if not local.is_file():
            raise NotFoundError(url, f"local file {local} does not exist")
        part.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, part)
        _verify(part, url, sha256, md5, check_gzip, validate)
        size = part.stat().st_size
        _finish(part, dest, url, gunzip)
        return DownloadInfo(dest, False, size, 0, False)

    validators: dict = {}
    resumed = False
    last_error = "no attempt made"
    attempts = 0
    wait: Optional[float] = None  # a server's Retry-After for the next attempt
    while attempts <= retries:
        if attempts:
            time.sleep(backoff * 2 ** (attempts - 1) if wait is None else wait)
        wait = None
        attempts += 1
        if part.exists() and not resume:
            part.unlink()
        offset = part.stat().st_size if part.exists() else 0
        try:
            size, appended = _transfer(url, part, offset, validators, timeout, progress)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                m = _UNSATISFIED_RANGE.match(e.headers.get("Content-Range", "") if e.headers else "")
                if m is not None and int(m.group(1)) == offset:
                    size, appended = offset, True  # the part already holds the whole file
                else:
                    part.unlink(missing_ok=True)
                    last_error = f"HTTP 416 for a range starting at {offset}; restarting from zero"
                    continue
            elif e.code in (404, 410):
                raise NotFoundError(url, f"HTTP {e.code} {e.reason}: no such file on the server "
                                         "(check the ID, the release/version and base_url)") from None
            elif e.code in _RETRY_STATUS or e.code >= 500:
                last_error = f"HTTP {e.code} {e.reason}"
                asked = retry_after_seconds(e.headers) if e.code in (429, 503) else None
                if asked is not None and asked > MAX_RETRY_AFTER_S:
                    raise DownloadError(url, f"HTTP {e.code} {e.reason}: the server asks to retry after "
                                             f"{asked:.0f} s (more than the {MAX_RETRY_AFTER_S:.0f} s foldnet "
                                             "waits); try again later") from None
                if asked is not None:
                    wait = asked
                    last_error += f" (Retry-After {asked:.0f} s)"
                log.warning("%s: %s (attempt %d of %d)", url, last_error, attempts, retries + 1)
                continue
            else:
                raise DownloadError(url, f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            if _offline_reason(e.reason):
                raise OfflineError(url, f"{e.reason}: {offline_hint(dest)}") from None
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                last_error = f"no answer from the server within {timeout:g} s (timeout={timeout:g})"
            else:
                last_error = f"{type(e.reason).__name__}: {e.reason}"
            log.warning("%s: %s (attempt %d of %d)", url, last_error, attempts, retries + 1)
            continue
        except (TimeoutError, socket.timeout):
            last_error = f"no data from the server for {timeout:g} s (stalled or too slow; timeout={timeout:g})"
            log.warning("%s: %s (attempt %d of %d)", url, last_error, attempts, retries + 1)
            continue
        except (_Retryable, http.client.HTTPException, ConnectionError) as e:
            last_error = f"{type(e).__name__}: {e}" if not isinstance(e, _Retryable) else str(e)
            log.warning("%s: %s (attempt %d of %d)", url, last_error, attempts, retries + 1)
            continue
        resumed = resumed or appended
        try:
            _verify(part, url, sha256, md5, check_gzip, validate)
        except ChecksumError as e:
            # A stale .part from another version of the file spliced onto new bytes is the one
            # failure a fresh, whole download can fix; a whole download that fails is final.
            if appended and attempts <= retries:
                last_error = e.reason
                log.warning("%s: %s after resuming; downloading whole file again", url, e.reason)
                continue
            raise
        _finish(part, dest, url, gunzip)
        return DownloadInfo(dest, False, size, attempts, resumed)

    kept = part.stat().st_size if part.exists() else 0
    keep_note = f"; {kept} bytes kept in {part} and resumed by the next call" if kept else ""
    raise DownloadError(url, f"failed after {attempts} attempts; last error: {last_error}{keep_note}")


def download(url: str, dest: PathLike, **options: Any) -> Path:
    """Download ``url`` to ``dest`` unless it is already there; return the verified path.

    Same arguments and errors as :func:`download_with_info`.

    Example:
      >>> download("https://files.rcsb.org/download/1CRN.pdb.gz", "data/downloads/pdb/1crn.pdb.gz")
    """
    return download_with_info(url, dest, **options).path
