"""Handlers for the user.casfs.* extended attributes (the rules are in xattrs.py)."""

from __future__ import annotations

import errno

import pyfuse3
import trio

from casfs.catalog import ROOT_INO

from . import xattrs
from .base import OperationsBase
from .boundary import handler
from .open_files import OpenFile


class XattrHandlers(OperationsBase):
    async def _xattr_values(self, inode: int) -> dict[str, str]:
        if inode == ROOT_INO or self.control.owns(inode):
            return {}
        await self._settled(inode)  # a bulk load's close: what it registers, once it has
        directory = await self._directory(inode)
        if directory is not None:
            return xattrs.directory_xattrs(directory)
        file = self.files.get(inode)
        if file is not None:
            parent_ino, document = file.parent_ino, file.document
            if parent_ino is not None:
                parent = await self.query(lambda c: c.get_directory(parent_ino))
            elif document is not None:
                parent = await self.query(lambda c: c.directory_of(document))
            else:
                parent = None
            if parent is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return xattrs.document_xattrs(None if file.dirty else file.document, parent,
                                          file.metadata)
        doc = await self.query(lambda c: c.get_document(inode))
        if doc is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return xattrs.document_xattrs(doc, await self.query(lambda c: c.directory_of(doc)), {})

    def _xattrs_on(self) -> None:
        """With -o noxattr, ENOSYS: the kernel then stops asking, for the whole mount
        (and `ls -l` stops paying two round trips per entry)."""
        if not self.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self._xattrs_on()
        xattrs.refuse_foreign(name)
        return xattrs.lookup(await self._xattr_values(inode), name)

    @handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        self._xattrs_on()
        return xattrs.names(await self._xattr_values(inode))

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        self._xattrs_on()
        self._writable()
        await self._set_metadata(inode, name, xattrs.decode_value(value))

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._xattrs_on()
        self._writable()
        xattrs.refuse_foreign(name)  # foreign ones are never kept
        await self._set_metadata(inode, name, None)

    async def _current_values(self, inode: int) -> dict[str, str]:
        """The attributes as they are, with the hash of a file still being written."""
        values = await self._xattr_values(inode)
        file = self.files.get(inode)
        if file is not None and file.dirty:
            async with file.lock:
                if file.staging is not None:
                    values["sha256"] = await trio.to_thread.run_sync(file.staging.digest)
        return values

    async def _set_metadata(self, inode: int, name: bytes, value: str | None) -> None:
        if self.control.owns(inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        await self._settled(inode)  # set on what a bulk load's close registered
        key = xattrs.change(name, value, await self._current_values(inode))
        if key is None:
            return
        if inode == ROOT_INO or await self._directory(inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        file: OpenFile | None = self.files.get(inode)
        if file is not None and (file.dirty or file.document is None):
            file.metadata[key] = value  # applied when the file is finalized
            return
        updated = await self.write_catalog(
            lambda c: c.update_metadata(inode, **{key: value}))
        if file is not None:
            file.document = updated  # the same bytes: the pin stays
