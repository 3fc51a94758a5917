"""The embedded store: an on-disk block store with exactly the CIDs of ``ipfs add``."""
from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import ArtifactInvalid, ArtifactNotFound, StoreUnavailable
from ..protocol.cid import MAX_BLOCK_SIZE, build_dag, cid_of_block, parse_node, read_file, validate_cid
from .base import ArtifactStore

__all__ = ["EmbeddedStore"]


class EmbeddedStore(ArtifactStore):
    """Blocks as files under ``root/blocks``, recursive pins as files under ``root/pins``.

    Writers take a shared lock and ``gc`` an exclusive one, so a collection never removes a
    block between its write and its pin. Every file is written to a temporary name and renamed,
    so readers in other processes never see a partial block.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.spec = f"embedded:{self.root}"
        try:
            (self.root / "blocks").mkdir(parents=True, exist_ok=True)
            (self.root / "pins").mkdir(exist_ok=True)
            (self.root / "lock").touch(exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot use store at {self.root}: {exc.strerror}") from None

    @contextmanager
    def _lock(self, mode: int):
        with open(self.root / "lock", "rb") as fh:
            fcntl.flock(fh, mode)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _block_path(self, cid: str) -> Path:
        return self.root / "blocks" / cid[-3:-1] / cid

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, data: bytes, *, pin: bool = True) -> str:
        root, blocks = build_dag(bytes(data))
        with self._lock(fcntl.LOCK_SH):
            for block in blocks:
                path = self._block_path(block.cid)
                if not path.exists():
                    self._write_atomic(path, block.data)
            if pin:
                self._write_atomic(self.root / "pins" / root, b"")
        return root

    def _block(self, cid: str) -> bytes:
        path = self._block_path(cid)
        try:
            with open(path, "rb") as fh:
                # A planted oversized file is never read whole. (Blocks are renamed into place,
                # so the size of an open one cannot change.)
                stat = os.fstat(fh.fileno())
                data = fh.read(stat.st_size) if stat.st_size <= MAX_BLOCK_SIZE else fh.read(MAX_BLOCK_SIZE + 1)
        except FileNotFoundError:
            raise ArtifactNotFound(f"{cid} is not in the store at {self.root}") from None
        if len(data) > MAX_BLOCK_SIZE or cid_of_block(data) != cid:
            # Set aside (kept as evidence), so that the next ``add`` of the same content restores it.
            quarantine = self.root / "quarantine" / cid
            quarantine.parent.mkdir(exist_ok=True)
            try:
                if os.stat(path).st_ino == stat.st_ino:  # not a good copy restored meanwhile
                    os.replace(path, quarantine)
            except FileNotFoundError:
                pass  # another reader set it aside first
            raise ArtifactInvalid(f"block {cid} in {self.root} is corrupted (moved to quarantine/)")
        return data

    def _fetch(self, cid: str, *, max_bytes: int) -> bytes:
        return read_file(cid, self._block, max_bytes)

    def _check_complete(self, cid: str) -> None:
        """Every block under ``cid`` is here and intact; each distinct block is read once."""
        seen: set[str] = set()
        stack = [cid]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            try:
                links, _, _ = parse_node(self._block(current))
            except ValueError as exc:
                raise ArtifactInvalid(f"DAG malformed: {current}: {exc}") from None
            stack.extend(links)

    def put_block(self, block: bytes) -> str:
        """Store one raw dag-pb block, unpinned, and return its CID. For tests and attack
        simulations that need graphs ``add`` would never build; honest peers do not use it."""
        cid = cid_of_block(block)
        with self._lock(fcntl.LOCK_SH):
            path = self._block_path(cid)
            if not path.exists():
                self._write_atomic(path, block)
        return cid

    def has(self, cid: str) -> bool:
        return self._block_path(validate_cid(cid)).exists()

    def pin(self, cid: str) -> None:
        validate_cid(cid)
        with self._lock(fcntl.LOCK_SH):
            self._check_complete(cid)  # pinning something incomplete would be a lie
            self._write_atomic(self.root / "pins" / cid, b"")

    def unpin(self, cid: str) -> None:
        (self.root / "pins" / validate_cid(cid)).unlink(missing_ok=True)

    def pins(self) -> list[str]:
        return sorted(p.name for p in (self.root / "pins").iterdir() if not p.name.startswith("."))

    def _reachable(self) -> set[str]:
        keep: set[str] = set()
        stack = self.pins()
        while stack:
            cid = stack.pop()
            if cid in keep:
                continue
            keep.add(cid)
            try:
                links, _, _ = parse_node(self._block_path(cid).read_bytes())
            except (OSError, ValueError):
                continue
            stack.extend(links)
        return keep

    def gc(self) -> list[str]:
        removed = []
        with self._lock(fcntl.LOCK_EX):
            keep = self._reachable()
            for path in (self.root / "blocks").glob("*/*"):
                if path.name.startswith(".") or path.name in keep:
                    continue
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return sorted(removed)

    def ping(self) -> None:
        if not os.access(self.root / "blocks", os.W_OK):
            raise StoreUnavailable(f"store at {self.root} is not writable")

