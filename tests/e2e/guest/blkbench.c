/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * blkbench: what a guest sees of its disk's speed, for the Linux e2e
 * (tests/e2e/linux-boot.sh builds it static for aarch64 and runs it in the
 * guest's initramfs).
 *
 *   blkbench DEVICE SECONDS
 *
 * O_DIRECT, one request at a time (queue depth 1), each phase SECONDS long:
 * 4 KiB random reads and writes (IOPS), then 1 MiB sequential reads and
 * writes (MB/s) over the whole device. Prints one line:
 *
 *   BLK: randread_iops=N randwrite_iops=N seqread_mbps=N seqwrite_mbps=N
 *
 * Exit status 0, or 1 with a message on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SMALL 4096
#define LARGE (1 << 20)

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* xorshift64: reproducible offsets, no libc state. */
static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Requests per second of `len`-byte transfers for `secs` seconds. */
static double phase(int fd, void *buf, size_t len, uint64_t size, int write,
                    int random, double secs)
{
    uint64_t blocks = size / len, seed = 0x9e3779b97f4a7c15ULL, i = 0, n = 0;
    double t0 = now(), t;

    do {
        uint64_t block = random ? next(&seed) % blocks : i++ % blocks;
        off_t off = (off_t)(block * len);
        ssize_t r = write ? pwrite(fd, buf, len, off) : pread(fd, buf, len, off);

        if (r != (ssize_t)len) {
            fprintf(stderr, "blkbench: %s at %lld: %s\n", write ? "pwrite" : "pread",
                    (long long)off, r < 0 ? strerror(errno) : "short transfer");
            exit(1);
        }
        n++;
        t = now() - t0;
    } while (t < secs);
    return n / t;
}

int main(int argc, char **argv)
{
    uint64_t size = 0;
    double secs;
    void *buf;
    int fd;

    if (argc != 3 || (secs = atof(argv[2])) <= 0) {
        fprintf(stderr, "usage: blkbench DEVICE SECONDS\n");
        return 1;
    }
    fd = open(argv[1], O_RDWR | O_DIRECT);
    if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0 || size < LARGE) {
        fprintf(stderr, "blkbench: %s: %s\n", argv[1],
                fd < 0 || size == 0 ? strerror(errno) : "smaller than 1 MiB");
        return 1;
    }
    if (posix_memalign(&buf, SMALL, LARGE)) {
        fprintf(stderr, "blkbench: out of memory\n");
        return 1;
    }
    memset(buf, 0x5a, LARGE);
    double rr = phase(fd, buf, SMALL, size, 0, 1, secs);
    double rw = phase(fd, buf, SMALL, size, 1, 1, secs);
    double sr = phase(fd, buf, LARGE, size, 0, 0, secs) * LARGE / 1e6;
    double sw = phase(fd, buf, LARGE, size, 1, 0, secs) * LARGE / 1e6;
    if (fsync(fd) < 0) {
        fprintf(stderr, "blkbench: fsync: %s\n", strerror(errno));
        return 1;
    }
    printf("BLK: randread_iops=%.0f randwrite_iops=%.0f seqread_mbps=%.1f seqwrite_mbps=%.1f\n",
           rr, rw, sr, sw);
    return 0;
}
