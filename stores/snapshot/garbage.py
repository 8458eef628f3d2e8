"""Removing what killed runs and pruned versions left behind."""

from __future__ import annotations

from .. import ledger
from .folder import SnapshotFolder
from .manifest import STORE_NAMES, Shard, ledger_of


class Garbage(SnapshotFolder):
    """Removing what no kept version uses (callers hold the lock)."""

    def _referenced(self) -> tuple[set[str], set[str]]:
        """The data folders and the ledger segments that kept versions use."""
        data, ledgers, _ = self._kept_files()
        return data, ledgers

    def _kept_files(self) -> tuple[set[str], set[str], set[str]]:
        """The data folders, ledger segments and change segments that kept
        versions use."""
        data: set[str] = set()
        ledgers: set[str] = set()
        changes: set[str] = set()
        for number in self._version_numbers():
            manifest = self._read_manifest(number)
            for entry in manifest["shards"]:
                if entry is not None:
                    data.update(f.execution for f in Shard.from_json(entry).files)
            ledgers.update(segment.path for segment in ledger_of(manifest))
            for change in manifest.get("changes", []):
                shard = Shard.from_json(change)
                data.add(shard.execution)
                changes.add(shard.path)
        return data, ledgers, changes

    def _remove_unpublished_versions(self, current: int | None) -> None:
        """Manifests above CURRENT: left by runs killed during their publish."""
        for number in self._manifest_numbers():
            if current is None or number > current:
                self.files.remove(self._manifest_path(number))

    def _remove_unpublished_store(self) -> None:
        """What a first run that never published left (but its meta and the lock)."""
        for name in self.files.listdir(""):
            if name in STORE_NAMES[1:]:
                self.files.remove_tree(name)
            elif name.endswith(".tmp") and name.startswith(STORE_NAMES[:2]):
                self.files.remove(name)

    def _collect_garbage(self) -> None:
        """Removes what killed runs left behind (called under the lock)."""
        self._remove_unpublished_versions(self._current_number())
        data, segments = self._referenced()
        for folder in ("data", "staging"):
            self.files.makedirs(folder)
        for name in self.files.listdir("data"):
            if name not in data:
                self.files.remove_tree(f"data/{name}")
        for name in self.files.listdir(ledger.FOLDER):
            if f"{ledger.FOLDER}/{name}" not in segments:
                self.files.remove(f"{ledger.FOLDER}/{name}")
        for name in self.files.listdir("staging"):
            self.files.remove_tree(f"staging/{name}")
        for folder in ("", "versions"):
            for name in self.files.listdir(folder):
                if name.endswith(".tmp"):
                    self.files.remove(f"{folder}/{name}" if folder else name)
