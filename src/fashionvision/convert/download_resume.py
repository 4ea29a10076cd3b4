"""Resumable HTTP downloads for multi-gigabyte files, and atomic installation of what they hold.

A transfer writes ``<name>.part``; when it breaks (a reset, a short body, Ctrl-C, a crash) the
next attempt, in the same run or a later one, asks only for the missing bytes with an HTTP
``Range`` header and appends them. A server that ignores ``Range`` (answers 200) makes the
download start again from zero. Only a file whose length matches the server's total (and the
configured ``size`` and ``sha256``, when given) is renamed from ``.part`` to its final name, so
a complete-looking file is always a complete file.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path

from fashionvision.errors import UserError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


@dataclass
class RemoteFile:
    """One file to fetch: where from, where to, and what it must look like when complete."""

    url: str
    target: Path
    size: int | None = None
    sha256: str | None = None


def _total_from(response: http.client.HTTPResponse, offset: int) -> int | None:
    """The full file length the server announces (206: Content-Range, 200: Content-Length)."""
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
        return None
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _say_other_host(remote: RemoteFile, final_url: str) -> None:
    """Warn when a redirect led to another host and no checksum vouches for what it sends."""
    asked, got = urllib.parse.urlsplit(remote.url).hostname, urllib.parse.urlsplit(final_url).hostname
    if asked != got and not remote.sha256:
        log.warning("%s redirected to another host (%s); no sha256 is configured for it, so what that host "
                    "sends is installed unchecked (set sha256 to verify it)", remote.url, got)


def _attempt(remote: RemoteFile, part: Path, timeout: float, progress: bool) -> int | None:
    """One HTTP request continuing ``part``; returns the announced total. Raises on failure."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(remote.url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part may already be whole
            match = _CONTENT_RANGE.match(exc.headers.get("Content-Range", "") or "")
            total = int(match.group(3)) if match and match.group(3) != "*" else None
            if total == offset:
                return total
            part.unlink()  # longer than the file: start again
            raise ConnectionError(f"the partial file was longer than {remote.url}; starting again") from exc
        raise
    with response:
        _say_other_host(remote, response.geturl())
        total = _total_from(response, offset)
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or match.group(1) is None or int(match.group(1)) != offset:
                part.unlink()  # the server sent another range than asked for: start again
                raise ConnectionError(f"{remote.url} answered a Range request with "
                                      f"'{response.headers.get('Content-Range')}'; starting again")
        if response.status == 200 and offset:
            log.info("%s does not support resuming (HTTP 200 to a Range request): starting again", remote.url)
            offset = 0
        if total is not None and remote.size is not None and total != remote.size:
            raise UserError(f"{remote.url} is {total} bytes, the configuration expects {remote.size}; "
                            "the file changed on the server or the configured size is wrong")
        if total is not None:
            free = shutil.disk_usage(part.parent).free
            if free < total - offset:
                raise UserError(f"not enough disk space in {part.parent} for {remote.url}: "
                                f"{(total - offset) / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free")
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=remote.target.name,
                disable=not progress) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    return total


def fetch_resumable(remote: RemoteFile, timeout: float = 60.0, progress: bool = True, retries: int = 3,
                    retry_wait: float = 2.0) -> Path:
    """Download ``remote.url`` to ``remote.target`` through ``<target>.part``, resuming; return the target.

    ``retries`` further attempts follow a broken transfer, each continuing where the last
    stopped. The ``.part`` file is kept on failure so the next run resumes; it is deleted
    when its content proves wrong (size or checksum), so that the next run starts afresh.

    Raises:
        UserError: HTTP errors, no network, an incomplete file after every retry, a size or
            checksum mismatch (each naming the URL).
    """
    target = remote.target
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(retries + 1):
        if attempt:
            log.info("resuming %s at byte %d (attempt %d of %d): %s", remote.url,
                     part.stat().st_size if part.exists() else 0, attempt + 1, retries + 1, last_error)
            time.sleep(retry_wait)
        try:
            total = _attempt(remote, part, timeout, progress)
        except urllib.error.HTTPError as exc:
            raise UserError(f"download of {remote.url} failed: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError, ConnectionError)):
                last_error = str(exc.reason)
                continue
            raise UserError(f"cannot reach {remote.url} ({exc.reason}); check the network or the address") from exc
        except (socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            continue
        received = part.stat().st_size if part.exists() else 0
        if total is not None and received < total:
            last_error = f"got {received} of {total} bytes"
            continue
        break
    else:
        got = part.stat().st_size if part.exists() else 0
        raise UserError(f"download of {remote.url} is incomplete after {retries + 1} attempts ({last_error}); "
                        f"{got} bytes kept in {part}: run the command again to resume")
    size = part.stat().st_size
    if total is None and remote.size is None and not remote.sha256:
        # the body simply ends where the connection closed: a cut transfer looks complete
        part.unlink()
        raise UserError(f"{remote.url} sent no Content-Length, so a transfer cut short cannot be told from a "
                        f"complete one ({size} bytes received); not installed (the partial file was removed): "
                        "set its sha256 (or size) in the configuration to verify and install it")
    if remote.size is not None and size != remote.size:
        part.unlink()
        raise UserError(f"{remote.url}: got {size} bytes, expected {remote.size}; the partial file was removed")
    if remote.sha256:
        digest = _file_sha256(part)
        if digest.lower() != remote.sha256.lower():
            part.unlink()
            raise UserError(f"checksum mismatch for {remote.url}: expected sha256 {remote.sha256}, got {digest}; "
                            "the downloaded file was removed")
    os.replace(part, target)
    return target
