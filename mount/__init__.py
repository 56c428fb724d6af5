"""The FUSE front end: shows a store's catalog as /<resolver>/<artifact_id>/<basename>.

`operations` holds the pyfuse3 handlers, `files` the state of files open for
writing, `xattrs` the user.casfs.* attributes, `daemon` the process that runs a
mount. The filesystem knows the store only through `casfs.store.Store` and the
ingest path in `casfs.ingest`.

Concurrency rules: every handler runs on the one trio thread, so in-memory state
needs no locks except where a handler awaits in the middle of a change to one
file (`OpenWrite.lock`). Disk I/O on bytes (copy, hash, fsync, link) runs in
worker threads; catalog queries run on the trio thread (they are short).
"""
