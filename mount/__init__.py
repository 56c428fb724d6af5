"""The FUSE front end: shows a store's catalog as /<resolver>/<artifact_id>/<basename>.

`operations` holds the pyfuse3 handlers for names, attributes and files, built on
`base` (shared state and helpers) with `directories` and `xattr_handlers`;
`open_files` the files open in the mount (one per inode, staged writes), each
pinned to its blob by a `blob_pin`,
`attributes` what stat shows, `xattrs` the user.casfs.* attributes, `control` the
mount's own /.casfs, `boundary` turns exceptions into errnos, `catalog_writer` runs
catalog writes, `daemon` the process that runs a mount, `passthrough` the kernel reading
blobs itself (loaded here, first: it must come before pyfuse3). The filesystem knows the
store only through `casfs.store.Store` and the ingest path in `casfs.ingest`.

Consistency (law 8; the README's "Consistency" section says it for users):
- On one mount every descriptor of a file reads the same bytes, the file's current
  ones, because the kernel keeps one page cache and one size per inode: reads go
  by inode through `OpenFile`, never by what a descriptor saw at open.
- The first open pins the version shown (an open descriptor on its blob) until the
  last release; unlink, rename-over, other mounts' overwrites and gc do not reach it.
- Other mounts' versions are taken at the first open after the last close here
  (close-to-open); the open drops the kernel's cached size of the old version.

Concurrency rules:
- Every handler runs on the one trio thread, so in-memory state needs no locks
  except where a handler awaits in the middle of a change to one file
  (`OpenFile.lock`, taken through `OpenFiles.hold`).
- Disk I/O on bytes (copy, hash, fsync, link) runs in worker threads; a write is
  queued in memory on the trio thread and written by a worker thread (`StagingFile`
  has its own lock for that). Staging files are made (and dedup hits' emptied for
  reuse) ahead of the creates that take them, by `staging_reserve`'s thread.
- Catalog reads run on the trio thread, on the store's connection (short, indexed).
- Catalog writes run on worker threads with connections of their own
  (`CatalogWriter`: one for SQLite, in the order they were asked for; a pool for
  PostgreSQL); the reading connection sees each as soon as it commits.
"""

from . import passthrough  # noqa: F401  (before any module loads pyfuse3)
