/*
 * vmm_console.c — the serial console log and QEMU's own log, read from the run directory.
 *
 * QEMU appends every byte the guest writes to the serial port to console.log (the logfile of
 * a pipe chardev whose output is /dev/null, opened O_APPEND), so nothing is ever dropped.
 * vmm_start moves the previous run's log aside, so offset 0 is always the start of the current
 * run.  Input goes the other way through the FIFO console.in.
 * Reading needs no QEMU and no QMP: GetConsoleOutput works for stopped instances too.
 *
 * Size: QEMU may not write a file past the RLIMIT_FSIZE set at launch (spec.console_max), a
 * hard backstop for a guest that floods its console while nobody trims.  vmm_console_trim()
 * keeps the file small in normal operation by cutting the middle out in place: the head (the
 * boot, what Latest=false returns) and the tail (what Latest=true returns) stay.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/vmm_int.h"

static int open_in(const char *run_dir, const char *name, int flags)
{
    char path[PATH_MAX];
    int rc = vmm_path(path, sizeof(path), run_dir, name);

    if (rc < 0)
        return rc;
    rc = open(path, flags | O_CLOEXEC | O_NOCTTY);
    return rc < 0 ? -errno : rc;
}

/* Appends up to `len` bytes from offset `off`; fewer if the file is shorter by now. */
static int read_range(int fd, off_t off, size_t len, struct buf *out)
{
    char chunk[16384];
    size_t done = 0;

    if (out->max < out->len || len > out->max - out->len)
        return -E2BIG;
    while (done < len) {
        size_t want = len - done < sizeof(chunk) ? len - done : sizeof(chunk);
        ssize_t n = pread(fd, chunk, want, off + (off_t)done);
        int rc;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        if ((rc = buf_append(out, chunk, (size_t)n)) < 0)
            return rc;
        done += (size_t)n;
    }
    return (int)done;
}

static int read_file(const char *run_dir, const char *name, bool tail, size_t max, struct buf *out)
{
    struct stat st;
    size_t size, len;
    off_t off;
    int fd, rc;

    if (max > INT_MAX)
        max = INT_MAX;
    fd = open_in(run_dir, name, O_RDONLY);
    if (fd < 0)
        return fd;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    size = (size_t)st.st_size;
    len = size < max ? size : max;
    off = tail ? (off_t)(size - len) : 0;
    rc = read_range(fd, off, len, out);
    close(fd);
    return rc;
}

int vmm_console_read(const char *run_dir, bool latest, size_t max, struct buf *out)
{
    return read_file(run_dir, VMM_FILE_CONSOLE, latest, max ? max : VMM_CONSOLE_EC2, out);
}

int vmm_console_write(const char *run_dir, const void *data, size_t len)
{
    size_t done = 0;
    int fd, rc = 0;

    if (len > INT_MAX)
        len = INT_MAX;
    /* O_NONBLOCK: ENXIO instead of waiting when nobody reads; EAGAIN when the pipe is full. */
    fd = open_in(run_dir, VMM_FILE_CONSOLE_IN, O_WRONLY | O_NONBLOCK);
    if (fd < 0)
        return fd;
    while (done < len) {
        ssize_t n = write(fd, (const char *)data + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = errno == EAGAIN ? 0 : -errno;
            break;
        }
        done += (size_t)n;
    }
    close(fd);
    return rc < 0 && done == 0 ? rc : (int)done;
}

int vmm_log_read(const char *run_dir, size_t max, struct buf *out)
{
    return read_file(run_dir, VMM_FILE_LOG, true, max ? max : 8192, out);
}

long long vmm_console_trim(const char *run_dir, size_t keep_head, size_t keep_tail)
{
    struct stat st;
    off_t blk, start, end, data;
    long long rc;
    int fd = open_in(run_dir, VMM_FILE_CONSOLE, O_RDWR);

    if (fd < 0)
        return fd;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    blk = st.st_blksize > 0 ? st.st_blksize : 4096;
    start = ((off_t)keep_head + blk - 1) / blk * blk;
    if (st.st_size < start + (off_t)keep_tail + 2 * blk) {
        rc = 0;
        goto out;
    }
    end = (st.st_size - (off_t)keep_tail) / blk * blk;
    if (end <= start) {
        rc = 0;
        goto out;
    }
    if (fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, start, end - start) == 0) {
        rc = end - start;
        goto out;
    }
    if (errno != EOPNOTSUPP && errno != EINVAL) {
        rc = -errno;
        goto out;
    }
    /* No collapse here (tmpfs, ...): punch the middle out, skipping what is already a hole. */
    data = lseek(fd, start, SEEK_DATA);
    if (data < 0 || data >= end) {
        rc = 0;
        goto out;
    }
    data = data / blk * blk;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, data, end - data) < 0) {
        rc = -errno;
        goto out;
    }
    rc = end - data;
out:
    close(fd);
    return rc;
}
