"""casfs: a content-addressed store of documents, its catalog, and the tools around them.

The core library (this package) knows nothing about FUSE; `casfs.mount` is the
filesystem front end and `casfs.tools` the command line. Everything here can be
used from a script or a test without a mount.
"""

__version__ = "0.1.0"
