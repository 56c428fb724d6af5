"""The one place where exceptions become errnos (design notes, section 8).

Only pyfuse3.FUSEError may leave a handler; anything else would end the mount and
leave "Transport endpoint is not connected". Every handler is wrapped with
`handler`, so no input of a user's can bring the mount down.
"""

from __future__ import annotations

import errno
import functools
import logging
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
            log.error("%s: %s", function.__name__, e)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s failed", function.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
