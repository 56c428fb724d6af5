"""The one place where exceptions become errnos (design notes, section 8).

Only pyfuse3.FUSEError may leave a handler; anything else would end the mount and
leave "Transport endpoint is not connected". Every handler is wrapped with
`handler`, so no input of a user's can bring the mount down.

A catalog server that cannot be reached fails every request that asks it, and a
pipeline that retries asks thousands of times a minute: the first failure is logged,
then one line every UNREACHABLE_LOG_EVERY_S says how many more there were, and the
metrics count them all (`casfs_mount_catalog_failures`).
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from casfs.errors import (
    CatalogBusy,
    CatalogFull,
    CatalogReadOnly,
    CatalogUnavailable,
    Conflict,
    InvalidName,
    NotFound,
)

log = logging.getLogger("casfs.mount")
UNREACHABLE_LOG_EVERY_S = 30.0


class Unreachable:
    """Requests answered EIO because the catalog server could not be reached, did not
    answer in time, or stayed locked: counted, and logged sparingly (see above)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = 0
        self._clock = clock
        self._quiet_until = 0.0
        self._quieted = 0

    def failed(self, request: str, error: Exception) -> None:
        self.count += 1
        now = self._clock()
        if now < self._quiet_until:
            self._quieted += 1
            return
        more = f" ({self._quieted} more requests failed so since the last such line)" \
            if self._quieted else ""
        log.error("%s: %s%s", request, error, more)
        self._quieted = 0
        self._quiet_until = now + UNREACHABLE_LOG_EVERY_S


unreachable = Unreachable()  # the daemon's: every tree it serves asks one catalog

P = ParamSpec("P")
R = TypeVar("R")


def handler(function: Callable[P, Coroutine[Any, Any, R]]
            ) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(function)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await function(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except InvalidName as e:
            raise pyfuse3.FUSEError(e.errno_hint) from None
        except Conflict:
            raise pyfuse3.FUSEError(errno.EEXIST) from None
        except NotFound:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except OSError as e:
            log.warning("%s: %s", function.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except CatalogFull:
            log.error("%s: the catalog's filesystem is full", function.__name__)
            raise pyfuse3.FUSEError(errno.ENOSPC) from None
        except CatalogReadOnly:
            raise pyfuse3.FUSEError(errno.EROFS) from None
        except (CatalogBusy, CatalogUnavailable) as e:
            unreachable.failed(function.__name__, e)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s failed", function.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
