"""The download cache of named weights: where files live, how they arrive, and how they are checked.

Files are looked up in this order, and downloaded at most once:

1. ``$POSEFORGE_HOME/downloads/<folder>/<file>`` (default ``~/.cache/poseforge``; a file placed
   there by hand counts, which is how an offline machine gets weights);
2. a mirror, when ``POSEFORGE_MIRROR`` names a folder or URL holding the release files
   (``<mirror>/<folder>/<file>``: an air-gapped cluster's copy of the releases);
3. for files on the Hugging Face hub, the hub's own cache (``HF_HOME``; read through ``huggingface_hub``
   when it is installed), so weights transformers already downloaded are not fetched again;
4. the release URL over HTTPS (hub files from ``HF_ENDPOINT``, with ``HF_TOKEN`` when set).

``POSEFORGE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` stop at step 3 (cached files only); a file that is
not there is a one-line error naming the path to place it at and where to get it. Every file with a
published checksum is verified (a full sha256, or the 8-digit prefix that mmengine's
``publish_model`` puts in the file name); downloads go to a ``.part`` file renamed only once verified.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ..errors import PoseforgeError
from ..io import sha256_file

__all__ = ["RemoteFile", "cache_home", "offline", "fetch_file", "is_cached", "placement_path"]

_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One released file.

    Attributes:
        filename: the file's name in the cache (for an archive ``member``: the extracted member's name).
        url: a direct download URL (``https://``, ``file://``), or ``None`` for a hub file.
        hf_repo: Hugging Face repository id (``"usyd-community/vitpose-base"``) when the file is on the hub.
        hf_filename: the file's path in that repository (default ``filename``).
        revision: the hub revision (a branch, tag or commit).
        sha256: the published checksum: the full hex digest, or a prefix of it (mmengine release names carry
            the first 8 digits); ``None`` where none is published (the digest is then recorded on download).
        member: for a ``.zip`` ``url``: the archive member to extract (matched by its path's end), whose digest
            ``sha256`` is.
    """

    filename: str
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    revision: str = "main"
    sha256: str | None = None
    member: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.hf_repo is None):
            raise PoseforgeError(f"RemoteFile {self.filename}: give exactly one of url and hf_repo")
        if self.sha256 is not None and (len(self.sha256) < 8 or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise PoseforgeError(f"RemoteFile {self.filename}: sha256 must be lowercase hex, 8 to 64 digits")

    @property
    def folder(self) -> str:
        """The cache sub-folder: the hub repository, else the URL's host."""
        return self.hf_repo if self.hf_repo else (urllib.parse.urlparse(self.url).netloc or "local")

    @property
    def source_url(self) -> str:
        """Where the file comes from, for messages and provenance."""
        if self.url:
            return self.url
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        return f"{endpoint}/{self.hf_repo}/resolve/{self.revision}/{self.hf_filename or self.filename}"


def cache_home() -> Path:
    """``$POSEFORGE_HOME``, else ``$XDG_CACHE_HOME/poseforge``, else ``~/.cache/poseforge``."""
    if os.environ.get("POSEFORGE_HOME"):
        return Path(os.environ["POSEFORGE_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "poseforge"


def offline() -> bool:
    """Whether downloads are off (``POSEFORGE_OFFLINE`` or Hugging Face's ``HF_HUB_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("POSEFORGE_OFFLINE", "HF_HUB_OFFLINE"))


def placement_path(remote: RemoteFile) -> Path:
    """Where the cache looks for ``remote`` first (a file placed here by hand is used as is)."""
    return cache_home() / "downloads" / remote.folder / remote.filename


def _verify(path: Path, remote: RemoteFile, what: str) -> str:
    """The file's sha256; a one-line error when it does not match the published one."""
    digest = sha256_file(path)
    if remote.sha256 is not None and not digest.startswith(remote.sha256):
        raise PoseforgeError(f"{what}: {path}: sha256 {digest[:16]}... does not match the release's "
                             f"{remote.sha256[:16]}... (corrupt or a different file); delete it and retry")
    return digest


def is_cached(remote: RemoteFile) -> bool:
    """Whether ``remote`` is available without a download (placed in the cache, or in the hub's cache)."""
    if placement_path(remote).is_file():
        return True
    return remote.hf_repo is not None and _hf_cached(remote) is not None


def fetch_file(remote: RemoteFile, what: str) -> tuple[Path, str]:
    """The local path of ``remote`` (downloading it once) and its sha256. ``what`` names the weights in errors."""
    target = placement_path(remote)
    if target.is_file():
        return target, _verify(target, remote, what)
    mirror = os.environ.get("POSEFORGE_MIRROR")
    if mirror:
        return _store(_mirror_url(mirror, remote), remote, target, what)
    if remote.hf_repo is not None:  # already in the Hugging Face cache (e.g. from transformers)?
        cached = _hf_cached(remote)
        if cached is not None:
            return cached, _verify(cached, remote, what)
    if offline():
        raise PoseforgeError(f"{what}: {remote.filename} is not in the cache and downloads are off "
                             f"(POSEFORGE_OFFLINE / HF_HUB_OFFLINE); place {remote.source_url} "
                             f"{'(its ' + remote.member + ') ' if remote.member else ''}at {target}")
    return _store(remote.source_url, remote, target, what)


def _mirror_url(mirror: str, remote: RemoteFile) -> str:
    """``<mirror>/<folder>/<released name>``: a mirror holds the files as released (archives unextracted)."""
    released = Path(urllib.parse.urlparse(remote.url).path).name if remote.url else (remote.hf_filename or remote.filename)
    base = mirror.rstrip("/") if "://" in mirror else Path(mirror).expanduser().resolve().as_uri()
    return f"{base}/{remote.folder}/{released}"


def _hf_cached(remote: RemoteFile) -> Path | None:
    """The file in the Hugging Face cache (``HF_HOME``) when ``huggingface_hub`` is installed and has it.

    Downloads themselves go through :func:`_download` into ``POSEFORGE_HOME`` (one progress display, a fast
    one-line failure without a network; ``HF_TOKEN`` is sent for hub URLs)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(remote.hf_repo, remote.hf_filename or remote.filename, revision=remote.revision)
    return Path(found) if isinstance(found, str) else None


def _store(url: str, remote: RemoteFile, target: Path, what: str) -> tuple[Path, str]:
    """Download ``url`` into ``target`` (extracting ``remote.member`` from an archive), verified, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, part_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    part = Path(part_name)
    try:
        _download(url, part, what, target, token=os.environ.get("HF_TOKEN") if remote.hf_repo else None)
        if remote.member is not None:
            extracted = part.with_suffix(".member")
            _extract(part, remote.member, extracted, what, url)
            os.replace(extracted, part)
        digest = _verify(part, remote, what)
        os.replace(part, target)
        return target, digest
    finally:
        part.unlink(missing_ok=True)
        part.with_suffix(".member").unlink(missing_ok=True)


def _download(url: str, dest: Path, what: str, target: Path, token: str | None = None) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    headers = {"User-Agent": "poseforge"}
    if token and url.startswith("https://"):
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=60)  # noqa: S310 - release URLs from the registry
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise PoseforgeError(f"{what}: cannot download {url} ({reason}); without a network, place the file at "
                             f"{target}") from None
    total = int(response.headers.get("Content-Length") or 0) or None
    with response, open(dest, "wb") as out, Progress(TextColumn(f"[bold]{target.name}"), BarColumn(), DownloadColumn(),
                                                     TransferSpeedColumn(), transient=True) as progress:
        task = progress.add_task("download", total=total)
        try:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                progress.advance(task, len(block))
        except (urllib.error.URLError, OSError) as e:
            raise PoseforgeError(f"{what}: download of {url} broke off ({e}); run again to retry") from None


def _extract(archive: Path, member: str, dest: Path, what: str, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
            if len(names) != 1:
                raise PoseforgeError(f"{what}: {url} holds {len(names)} members named {member}, expected one")
            with z.open(names[0]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
    except zipfile.BadZipFile:
        raise PoseforgeError(f"{what}: {url} is not a readable zip archive") from None
