/*
 * FUSE passthrough for pyfuse3 on libfuse 3.14: the kernel reads an open file's
 * bytes from a backing file itself, and the reads never reach the daemon.
 *
 * Why this exists: the kernel (6.9+) offers passthrough at INIT (FUSE_PASSTHROUGH)
 * and takes a backing file in the reply to OPEN (FOPEN_PASSTHROUGH and a
 * `backing_id` from the FUSE_DEV_IOC_BACKING_OPEN ioctl). libfuse learned to ask for
 * it in 3.17; Debian's 3.14 neither sets the INIT flag nor fills `backing_id`, and
 * pyfuse3 exposes neither. Both replies are written by libfuse, so this module sits
 * beside it: loaded with RTLD_GLOBAL before pyfuse3, it provides two of libfuse's
 * functions that pyfuse3 calls, and the dynamic linker binds pyfuse3 to them:
 *
 * - `fuse_session_mount`: mounts with libfuse's own, then installs custom I/O
 *   (`fuse_session_custom_io`, public since 3.14) that reads and writes /dev/fuse
 *   exactly as libfuse does, except that the INIT reply also accepts passthrough
 *   when the daemon asked for it (`want`) and the kernel offered it, and shared
 *   mmaps of direct-I/O files (FUSE_DIRECT_IO_ALLOW_MMAP, also unknown to 3.14)
 *   when the kernel offers them.
 * - `fuse_reply_open`: for a file handle the daemon marked (`reply_passthrough`),
 *   sends the open reply with FOPEN_PASSTHROUGH and the backing id; any other goes
 *   to libfuse's own.
 *
 * Everything else (which file gets a backing file, when it is closed) is decided
 * in Python (mount/passthrough.py). The structures below are the kernel's FUSE ABI
 * (protocol 7.40+), written out because the installed headers predate it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define FUSE_USE_VERSION 314
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define OP_INIT 26
#define INIT_EXT (1u << 30)
#define WRITEBACK_CACHE (1u << 16)
#define PASSTHROUGH_FLAGS2 (1u << (37 - 32))
#define DIRECT_IO_ALLOW_MMAP_FLAGS2 (1u << (36 - 32))
#define OPEN_PASSTHROUGH (1u << 7)
#define OPEN_DIRECT_IO (1u << 0)

struct in_header { uint32_t len, opcode; uint64_t unique, nodeid; uint32_t uid, gid, pid;
                   uint16_t total_extlen, padding; };
struct init_in { uint32_t major, minor, max_readahead, flags, flags2, unused[11]; };
struct out_header { uint32_t len; int32_t error; uint64_t unique; };
struct init_out { uint32_t major, minor, max_readahead, flags; uint16_t max_background,
                  congestion_threshold; uint32_t max_write, time_gran; uint16_t max_pages,
                  map_alignment; uint32_t flags2, max_stack_depth; };
struct open_out { uint64_t fh; uint32_t open_flags; int32_t backing_id; };
struct backing_map { int32_t fd; uint32_t flags; uint64_t padding; };

#define IOC_BACKING_OPEN _IOW(229, 1, struct backing_map)
#define IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

static int want;             /* the daemon asks for passthrough at INIT */
static int hooked;           /* our fuse_session_mount ran: custom I/O is in place */
static int negotiated;       /* the INIT reply accepted passthrough */
static int direct_io_mmap;   /* ... and shared mmaps of direct-I/O files */
static int device_fd = -1;   /* /dev/fuse of the session */
static uint64_t init_unique; /* the INIT request, 0 when not seen yet */
static uint32_t kernel_flags2; /* what that request offered beyond 32 flags */

/* Handles whose next open reply carries a backing file; a handful at a time. */
#define MARKS 64
static struct { uint64_t fh; int32_t backing_id; int direct_io; int used; } marks[MARKS];

static void *libfuse(const char *name) {
    static void *handle;
    if (handle == NULL)
        handle = dlopen("libfuse3.so.3", RTLD_NOW);
    return handle ? dlvsym(handle, name, "FUSE_3.0") : NULL;
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata) {
    (void)userdata;
    ssize_t res = read(fd, buf, len);
    if (res >= (ssize_t)(sizeof(struct in_header) + sizeof(struct init_in))) {
        const struct in_header *in = buf;
        if (in->opcode == OP_INIT) {
            const struct init_in *arg = (const void *)(in + 1);
            init_unique = in->unique;
            kernel_flags2 = (arg->flags & INIT_EXT) ? arg->flags2 : 0;
        }
    }
    return res;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    if (init_unique != 0 && count >= 2 && iov[0].iov_len == sizeof(struct out_header) &&
            ((struct out_header *)iov[0].iov_base)->unique == init_unique) {
        init_unique = 0;
        struct init_out *out = iov[1].iov_base;
        if (iov[1].iov_len >= sizeof(struct init_out) && kernel_flags2 != 0) {
            /* Shared mmaps of a file opened with direct I/O (Linux 6.6+): the daemon
               opens a blob still arriving that way, and its readers may map it. */
            if (kernel_flags2 & DIRECT_IO_ALLOW_MMAP_FLAGS2) {
                out->flags |= INIT_EXT;
                out->flags2 |= DIRECT_IO_ALLOW_MMAP_FLAGS2;
                direct_io_mmap = 1;
            }
            if (want && (kernel_flags2 & PASSTHROUGH_FLAGS2) &&
                    !(out->flags & WRITEBACK_CACHE)) {
                out->flags |= INIT_EXT;
                out->flags2 |= PASSTHROUGH_FLAGS2;
                out->max_stack_depth = 1; /* backing files on an unstacked filesystem */
                negotiated = 1;
            }
        }
    }
    return writev(fd, iov, count);
}

static ssize_t io_splice_receive(int fdin, off_t *offin, int fdout, off_t *offout,
                                 size_t len, unsigned int flags, void *userdata) {
    (void)userdata;
    return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout,
                              size_t len, unsigned int flags, void *userdata) {
    (void)userdata;
    return splice(fdin, offin, fdout, offout, len, flags);
}

int fuse_session_mount(struct fuse_session *se, const char *mountpoint) {
    int (*real_mount)(struct fuse_session *, const char *) = libfuse("fuse_session_mount");
    int (*session_fd)(struct fuse_session *) = libfuse("fuse_session_fd");
    int (*custom_io)(struct fuse_session *, const struct fuse_custom_io *, int) =
        libfuse("fuse_session_custom_io");
    if (real_mount == NULL)
        return -1;
    int res = real_mount(se, mountpoint);
    if (res != 0 || session_fd == NULL || custom_io == NULL)
        return res;
    static const struct fuse_custom_io io = {
        .writev = io_writev, .read = io_read,
        .splice_receive = io_splice_receive, .splice_send = io_splice_send,
    };
    device_fd = session_fd(se);
    if (custom_io(se, &io, device_fd) == 0)
        hooked = 1;
    return res;
}

int fuse_reply_open(fuse_req_t req, const struct fuse_file_info *fi) {
    for (int i = 0; i < MARKS; i++) {
        if (marks[i].used && marks[i].fh == fi->fh) {
            struct open_out out = {
                .fh = fi->fh,
                .open_flags = OPEN_PASSTHROUGH | (marks[i].direct_io ? OPEN_DIRECT_IO : 0),
                .backing_id = marks[i].backing_id,
            };
            marks[i].used = 0;
            static int (*reply_buf)(fuse_req_t, const char *, size_t);
            if (reply_buf == NULL)
                reply_buf = libfuse("fuse_reply_buf");
            return reply_buf(req, (const char *)&out, sizeof(out));
        }
    }
    static int (*real_reply_open)(fuse_req_t, const struct fuse_file_info *);
    if (real_reply_open == NULL)
        real_reply_open = libfuse("fuse_reply_open");
    return real_reply_open(req, fi);
}

static PyObject *py_want(PyObject *self, PyObject *arg) {
    (void)self;
    want = PyObject_IsTrue(arg);
    Py_RETURN_NONE;
}

static PyObject *py_hooked(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(hooked);
}

static PyObject *py_negotiated(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(negotiated);
}

static PyObject *py_direct_io_mmap(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(direct_io_mmap);
}

static PyObject *py_open_backing(PyObject *self, PyObject *arg) {
    (void)self;
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    struct backing_map map = { .fd = (int32_t)fd };
    int id = ioctl(device_fd, IOC_BACKING_OPEN, &map);
    if (id < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(id);
}

static PyObject *py_close_backing(PyObject *self, PyObject *arg) {
    (void)self;
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    uint32_t backing_id = (uint32_t)id;
    if (ioctl(device_fd, IOC_BACKING_CLOSE, &backing_id) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *py_reply_passthrough(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long fh;
    int backing_id, direct_io;
    if (!PyArg_ParseTuple(args, "Kip", &fh, &backing_id, &direct_io))
        return NULL;
    for (int i = 0; i < MARKS; i++) {
        if (!marks[i].used) {
            marks[i].fh = fh;
            marks[i].backing_id = backing_id;
            marks[i].direct_io = direct_io;
            marks[i].used = 1;
            Py_RETURN_NONE;
        }
    }
    PyErr_SetString(PyExc_RuntimeError, "too many open replies waiting for a backing file");
    return NULL;
}

static PyMethodDef methods[] = {
    {"want", py_want, METH_O, "Ask the kernel for passthrough at INIT (before mounting)."},
    {"hooked", py_hooked, METH_NOARGS,
     "Whether pyfuse3's session mounted through this module (loaded before pyfuse3)."},
    {"negotiated", py_negotiated, METH_NOARGS, "Whether the INIT reply accepted passthrough."},
    {"direct_io_mmap", py_direct_io_mmap, METH_NOARGS,
     "Whether the INIT reply accepted shared mmaps of direct-I/O files."},
    {"open_backing", py_open_backing, METH_O,
     "A backing id for an open descriptor (FUSE_DEV_IOC_BACKING_OPEN; needs CAP_SYS_ADMIN)."},
    {"close_backing", py_close_backing, METH_O, "Give a backing id back."},
    {"reply_passthrough", py_reply_passthrough, METH_VARARGS,
     "reply_passthrough(fh, backing_id, direct_io): the open reply of fh names the backing."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_passthrough",
    "FUSE passthrough beside pyfuse3 and libfuse 3.14 (see the source's comment).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__passthrough(void) { return PyModule_Create(&module); }
