"""Handlers for the user.casfs.* extended attributes (the rules are in xattrs.py)."""

from __future__ import annotations

import errno

import pyfuse3

from casfs.schema import ROOT_INO

from . import xattrs
from .base import OperationsBase
from .boundary import handler
from .writes import OpenWrite


class XattrHandlers(OperationsBase):
    def _xattr_values(self, inode: int) -> dict[str, str]:
        if inode == ROOT_INO or self.control.owns(inode):
            return {}
        directory = self._directory(inode)
        if directory is not None:
            return xattrs.directory_xattrs(directory)
        write = self.writes.get(inode)
        if write is not None:
            parent = self.catalog.get_directory(write.parent_ino)
            if parent is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return xattrs.document_xattrs(None if write.dirty else write.document, parent,
                                          write.metadata)
        doc = self.catalog.get_document(inode)
        if doc is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return xattrs.document_xattrs(doc, self.catalog.directory_of(doc), {})

    def _xattrs_on(self) -> None:
        """With -o noxattr, ENOSYS: the kernel then stops asking, for the whole mount
        (and `ls -l` stops paying two round trips per entry)."""
        if not self.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self._xattrs_on()
        if not name.startswith(xattrs.PREFIX_BYTES):
            # ls -l asks every entry for security.selinux and system.posix_acl_access,
            # and FUSE caches no answer: answer without touching the catalog.
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return xattrs.lookup(self._xattr_values(inode), name)

    @handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        self._xattrs_on()
        return xattrs.names(self._xattr_values(inode))

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        self._xattrs_on()
        self._writable()
        await self._set_metadata(inode, xattrs.settable_key(name), xattrs.decode_value(value))

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._xattrs_on()
        self._writable()
        await self._set_metadata(inode, xattrs.settable_key(name), None)

    async def _set_metadata(self, inode: int, key: str, value: str | None) -> None:
        if inode == ROOT_INO or self.control.owns(inode) or self._directory(inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        write: OpenWrite | None = self.writes.get(inode)
        if write is not None and (write.dirty or write.document is None):
            write.metadata[key] = value  # applied when the file is finalized
            return
        updated = await self.write_catalog(
            lambda c: c.update_metadata(inode, **{key: value}))
        if write is not None:
            write.document = updated
