"""Handlers for directories: open, list (paged by inode), make, remove."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pyfuse3

from casfs import naming
from casfs.catalog import ROOT_INO, Catalog
from casfs.errors import Conflict
from casfs.records import Directory, Document

from . import control
from .base import OperationsBase
from .boundary import handler

READDIR_PAGE = 500


class DirectoryHandlers(OperationsBase):
    @handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode in (ROOT_INO, control.DIR_INO):
            return inode
        if self.control.owns(inode) or await self._directory(inode) is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR if self.control.owns(inode)
                                    or await self._is_document(inode) else errno.ENOENT)
        return inode

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """List a directory in pages by inode, resuming after `start_id` (the last inode)."""
        if self.control.owns(fh):
            for name, attr in self.control.entries():
                if attr.st_ino > start_id and self.readdir_reply(
                        token, name.encode(), attr, attr.st_ino):
                    self._counted(attr)
            return
        directory = await self._directory(fh)
        after = start_id
        while True:
            entries: list[tuple[str, pyfuse3.EntryAttributes]]
            if directory is None or directory.artifact_id is None:
                dirs = await self.query(_directories_page(fh, after))
                full = len(dirs) == READDIR_PAGE
                entries = [(d.name, self.attrs.directory(d.ino, d.mtime_ns)) for d in dirs]
            else:
                docs = await self.query(_documents_page(directory, after))
                full = len(docs) == READDIR_PAGE
                entries = self._with_open_writes(fh, docs, after, full)
            for name, attr in entries:
                if not self.readdir_reply(token, name.encode(), attr, attr.st_ino):
                    return
                self._counted(attr)
                after = attr.st_ino
            if not full:
                return

    def _with_open_writes(self, dir_ino: int, docs: list[Document], after: int,
                          full: bool) -> list[tuple[str, pyfuse3.EntryAttributes]]:
        """Catalog entries of a page, as this mount has them open, plus files being
        written here that the catalog does not have yet, in the same inode range."""
        last = docs[-1].ino if full else None
        entries: dict[int, tuple[str, pyfuse3.EntryAttributes]] = {}
        for d in docs:
            file = self.files.get(d.ino)
            if file is None:
                entries[d.ino] = (d.basename, self.attrs.document(d))
            elif file.parent_ino is None:  # open for reading only
                entries[d.ino] = (d.basename, self.attrs.open_file(file))
        for f in self.files.in_directory(dir_ino):
            if f.ino > after and (last is None or f.ino <= last) and f.name is not None:
                entries[f.ino] = (f.name, self.attrs.open_file(f))
        return [entries[ino] for ino in sorted(entries)]

    @handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        text = naming.check_component(name)
        parent = await self._directory(parent_inode)
        if parent_inode != ROOT_INO and (parent is None or parent.artifact_id is not None):
            raise self._refuse("mkdir below an artifact directory", errno.EPERM)
        if parent_inode == ROOT_INO and text in naming.RESERVED_ROOT_NAMES:
            raise pyfuse3.FUSEError(errno.EPERM)
        created = await self.write_catalog(lambda c: c.make_directory(parent_inode, text))
        self.filled.made(created)
        return self._counted(self.attrs.directory(created.ino, created.mtime_ns))

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        text = naming.check_component(name)
        directory = await self.query(lambda c: c.lookup_directory(parent_inode, text))
        if directory is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR if await self._child(parent_inode, text)
                                    else errno.ENOENT)
        if self.files.in_directory(directory.ino):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        try:
            await self.write_catalog(lambda c: c.remove_directory(directory.ino))
            self.directories.forget(directory.ino)
        except Conflict:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY) from None


def _directories_page(parent_ino: int, after: int) -> Callable[[Catalog], list[Directory]]:
    return lambda catalog: catalog.list_directories(parent_ino, after, READDIR_PAGE)


def _documents_page(directory: Directory, after: int) -> Callable[[Catalog], list[Document]]:
    return lambda catalog: catalog.list_documents(directory, after, READDIR_PAGE)
