"""The user.casfs.* extended attributes: what a record shows and what may be set."""

from __future__ import annotations

import errno

import pyfuse3

from casfs.records import Directory, Document

PREFIX = "user.casfs."
PREFIX_BYTES = PREFIX.encode()
SHOWN = ("sha256", "source_url", "content_type", "artifact_id", "resolver", "run_id")
SETTABLE = frozenset({"source_url", "content_type", "run_id"})


def document_xattrs(doc: Document | None, directory: Directory,
                    overrides: dict[str, str | None]) -> dict[str, str]:
    """The attributes of a file; `doc` is None for a file not yet closed once."""
    values: dict[str, str | None] = {"resolver": directory.resolver,
                                     "artifact_id": directory.artifact_id}
    if doc is not None:
        values.update(sha256=doc.sha256, source_url=doc.source_url,
                      content_type=doc.content_type, run_id=doc.run_id)
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def directory_xattrs(directory: Directory) -> dict[str, str]:
    values = {"resolver": directory.resolver, "artifact_id": directory.artifact_id}
    return {k: v for k, v in values.items() if v is not None}


def change(raw_name: bytes, value: str | None, current: dict[str, str]) -> str | None:
    """The field a setxattr (or, with value None, removexattr) changes, None when it
    changes nothing, or a FUSEError saying why not.

    Setting an attribute to the value it has is no change, so a copy made with
    `cp -a`, `rsync -aX` or `mv` goes back in. Other `user.*` attributes (a browser's
    or `wget --xattr`'s `user.xdg.origin.url`) are accepted and not kept; other
    namespaces are not supported.
    """
    name = raw_name.decode("utf-8", errors="replace")
    if not name.startswith(PREFIX):
        if name.startswith("user."):
            return None
        raise pyfuse3.FUSEError(errno.ENOTSUP)
    key = name[len(PREFIX):]
    if key not in SHOWN:
        raise pyfuse3.FUSEError(errno.ENOTSUP)
    if current.get(key) == value:
        return None
    if key not in SETTABLE:
        raise pyfuse3.FUSEError(errno.EPERM)  # the hash and the placement are not settable
    return key


def decode_value(raw: bytes) -> str | None:
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.EINVAL) from None
    if "\0" in value:
        raise pyfuse3.FUSEError(errno.EINVAL)
    return value or None


def refuse_foreign(raw_name: bytes) -> None:
    """Answer a getxattr of a name casfs never holds, without the catalog.

    casfs keeps attributes in the `user.` namespace only. A name in another
    namespace (`security.selinux`, `system.posix_acl_access`, `trusted.*`) gets
    ENOTSUP, as on a filesystem without labels or ACLs, not ENODATA ("this file has
    none"): `ls -l` asks every entry for those two, the kernel caches no answer for
    FUSE, and on ENOTSUP `ls` stops asking for the rest of the device, which took
    `ls -l` of 10,000 entries from about 20x native to under 2x (README, Performance).
    """
    if not raw_name.startswith(b"user."):
        raise pyfuse3.FUSEError(errno.ENOTSUP)
    if not raw_name.startswith(PREFIX_BYTES):
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)


def lookup(values: dict[str, str], raw_name: bytes) -> bytes:
    name = raw_name.decode("utf-8", errors="replace")
    if not name.startswith(PREFIX) or name[len(PREFIX):] not in values:
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
    return values[name[len(PREFIX):]].encode()


def names(values: dict[str, str]) -> list[bytes]:
    return [(PREFIX + key).encode() for key in SHOWN if key in values]
