/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * vmm.c: a C program that plays the VMM the way a QEMU sysbus device would,
 * through the shim's C ABI (include/vsmmu.h).
 *
 *   vmm VSMMUD_PATH        spawn `vsmmud --fd 3 --seccomp kill` and drive it,
 *                          then spawn a second one and SIGKILL it
 *   vmm --socket PATH      connect to a vsmmud listening on PATH instead
 *                          (the kill scenario is skipped)
 *
 * Prints one `NAME=VALUE` line per observation and `result=PASS` last;
 * exits 0 only if every value matched what it expects.
 *
 * Build (from the repository root, after `cargo build -p vsmmu-capi`):
 *   cc -std=c11 -Wall -Wextra -o vmm client-shim/capi/examples/vmm.c \
 *      -Iclient-shim/capi/include target/debug/libvsmmu.a \
 *      -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vsmmu.h"

/* SMMUv3 register offsets (page 0). */
#define SMMU_IDR0 0x00
#define SMMU_IDR1 0x04
#define SMMU_IIDR 0x18
#define SMMU_AIDR 0x1c
#define SMMU_CR0 0x20
#define SMMU_CR0ACK 0x24
#define SMMU_CR1 0x28
#define SMMU_CR2 0x2c
#define SMMU_STRTAB_BASE 0x80
#define SMMU_STRTAB_BASE_CFG 0x88
#define SMMU_CMDQ_BASE 0x90
#define SMMU_CMDQ_PROD 0x98
#define SMMU_CMDQ_CONS 0x9c

#define IDR1_CMDQS(idr1) (((idr1) >> 21) & 0x1f)
#define Q_BASE_RA (1ULL << 62)
#define STRTAB_BASE_RA (1ULL << 62)

/* What Linux's arm_smmu_device_reset() writes: queues and tables inner
 * shareable, write-back read/write-allocate; PTM | RECINVSID. */
#define CR1_LINUX 0x0d75
#define CR2_LINUX 0x6

/* Guest RAM: 1 MiB at QEMU virt's RAM base. */
#define RAM_BASE 0x40000000ULL
#define RAM_SIZE (1ULL << 20)
#define CMDQ_GPA (RAM_BASE + 0x10000)
#define STRTAB_GPA (RAM_BASE + 0x20000)

#define NR_IRQS 4

static int failures;

#define FAIL(...)                                                  \
    do {                                                           \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);       \
        fprintf(stderr, __VA_ARGS__);                              \
        fputc('\n', stderr);                                       \
        failures++;                                                \
    } while (0)

#define CHECK(cond, ...)       \
    do {                       \
        if (!(cond)) {         \
            FAIL(__VA_ARGS__); \
        }                      \
    } while (0)

/* Calls that must succeed: report the shim's message otherwise. */
#define MUST(call)                                                              \
    do {                                                                        \
        int rc_ = (call);                                                       \
        if (rc_ < 0) {                                                          \
            FAIL("%s = %d (%s)", #call, rc_, vsmmu_last_error());               \
        }                                                                       \
    } while (0)

static uint64_t rd(struct vsmmu_client *c, uint64_t offset, unsigned size)
{
    uint64_t v = 0;
    int rc = vsmmu_mmio_read(c, offset, size, &v);
    if (rc < 0) {
        FAIL("read %#" PRIx64 "/%u = %d (%s)", offset, size, rc, vsmmu_last_error());
        return ~0ULL;
    }
    return v;
}

static void wr(struct vsmmu_client *c, uint64_t offset, unsigned size, uint64_t value, bool posted)
{
    int rc = vsmmu_mmio_write(c, offset, size, value, posted);
    if (rc < 0) {
        FAIL("write %#" PRIx64 "/%u = %d (%s)", offset, size, rc, vsmmu_last_error());
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static struct vsmmu_client *open_server(const char *vsmmud, const char *sock_path)
{
    struct vsmmu_client *c = sock_path ? vsmmu_connect(sock_path) : vsmmu_spawn(vsmmud, "kill", NULL);
    if (!c) {
        FAIL("%s %s: %s (errno %d)", sock_path ? "vsmmu_connect" : "vsmmu_spawn",
             sock_path ? sock_path : vsmmud, vsmmu_last_error(), vsmmu_last_errno());
    }
    return c;
}

/* Guest RAM as a QEMU memory backend would make it: a sealed memfd. */
static int make_guest_ram(void **map)
{
    int fd = memfd_create("vmm-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        FAIL("memfd_create: %s", strerror(errno));
        return -1;
    }
    if (ftruncate(fd, RAM_SIZE) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        FAIL("ftruncate/seal: %s", strerror(errno));
        close(fd);
        return -1;
    }
    *map = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (*map == MAP_FAILED) {
        FAIL("mmap: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Scenario 1: realize, the first steps of Linux's probe, attach, stats. */
/* What the notify handler saw. */
struct seen {
    unsigned count;
    unsigned last_kind;
};

static void on_invalidation(void *opaque, const struct vsmmu_invalidation *rec)
{
    struct seen *s = opaque;

    s->count++;
    s->last_kind = rec->kind;
}

static void probe(const char *vsmmud, const char *sock_path)
{
    struct vsmmu_client *c = open_server(vsmmud, sock_path);
    if (!c) {
        return;
    }
    int pid = vsmmu_server_pid(c);
    printf("mode=%s\n", sock_path ? "socket" : "spawn");
    CHECK(sock_path ? pid == -1 : pid > 0, "server pid %d", pid);

    /* Guest RAM, mapped for the SMMU model. */
    void *ram = NULL;
    int ram_fd = make_guest_ram(&ram);
    if (ram_fd >= 0) {
        MUST(vsmmu_dma_map(c, ram_fd, 0, RAM_BASE, RAM_SIZE));
    }

    /* The four SPIs (EVENTQ, PRIQ, CMD_SYNC, GERROR) as eventfds. */
    int irq_fds[NR_IRQS];
    for (unsigned i = 0; i < NR_IRQS; i++) {
        irq_fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        CHECK(irq_fds[i] >= 0, "eventfd: %s", strerror(errno));
        if (irq_fds[i] >= 0) {
            MUST(vsmmu_set_irq(c, i, irq_fds[i]));
        }
    }

    /* Identification. */
    uint32_t idr0 = (uint32_t)rd(c, SMMU_IDR0, 4);
    uint32_t idr1 = (uint32_t)rd(c, SMMU_IDR1, 4);
    uint32_t iidr = (uint32_t)rd(c, SMMU_IIDR, 4);
    uint32_t aidr = (uint32_t)rd(c, SMMU_AIDR, 4);
    printf("IDR0=0x%08" PRIx32 "\n", idr0);
    printf("IDR1=0x%08" PRIx32 "\n", idr1);
    printf("IIDR=0x%08" PRIx32 "\n", iidr);
    printf("AIDR=0x%08" PRIx32 "\n", aidr);
    /* A 64-bit read of IDR0 returns IDR1:IDR0. */
    CHECK(rd(c, SMMU_IDR0, 8) == ((uint64_t)idr1 << 32 | idr0), "64-bit IDR0/IDR1 read");

    /* arm_smmu_device_disable(): CR0 = 0, then poll CR0ACK. */
    wr(c, SMMU_CR0, 4, 0, false);
    uint64_t ack = ~0ULL;
    for (int i = 0; i < 1000 && ack != 0; i++) {
        ack = rd(c, SMMU_CR0ACK, 4);
    }
    printf("CR0ACK=0x%08" PRIx64 "\n", ack);
    CHECK(ack == 0, "CR0ACK %#" PRIx64 " after CR0=0", ack);

    /* Table and queue attributes, then CR2. */
    wr(c, SMMU_CR1, 4, CR1_LINUX, false);
    uint64_t cr1 = rd(c, SMMU_CR1, 4);
    printf("CR1=0x%08" PRIx64 "\n", cr1);
    CHECK(cr1 == CR1_LINUX, "CR1 reads %#" PRIx64, cr1);
    wr(c, SMMU_CR2, 4, CR2_LINUX, false);
    uint64_t cr2 = rd(c, SMMU_CR2, 4);
    printf("CR2=0x%08" PRIx64 "\n", cr2);
    CHECK(cr2 == CR2_LINUX, "CR2 reads %#" PRIx64, cr2);

    /* The stream table: a linear table of 32 STEs. The CFG write is
     * posted: the read that follows is ordered after it. */
    uint64_t strtab = STRTAB_BASE_RA | STRTAB_GPA;
    wr(c, SMMU_STRTAB_BASE, 8, strtab, false);
    wr(c, SMMU_STRTAB_BASE_CFG, 4, 5, true);
    uint64_t strtab_rd = rd(c, SMMU_STRTAB_BASE, 8);
    uint64_t strtab_cfg = rd(c, SMMU_STRTAB_BASE_CFG, 4);
    printf("STRTAB_BASE=0x%016" PRIx64 "\n", strtab_rd);
    printf("STRTAB_BASE_CFG=0x%08" PRIx64 "\n", strtab_cfg);
    CHECK(strtab_rd == strtab, "STRTAB_BASE reads %#" PRIx64 ", wrote %#" PRIx64, strtab_rd, strtab);
    CHECK(strtab_cfg == 5, "STRTAB_BASE_CFG reads %#" PRIx64, strtab_cfg);

    /* The command queue: 256 entries, or fewer if IDR1.CMDQS says so. */
    unsigned log2 = IDR1_CMDQS(idr1) < 8 ? IDR1_CMDQS(idr1) : 8;
    uint64_t cmdq = Q_BASE_RA | CMDQ_GPA | log2;
    wr(c, SMMU_CMDQ_BASE, 8, cmdq, false);
    wr(c, SMMU_CMDQ_PROD, 4, 0, false);
    wr(c, SMMU_CMDQ_CONS, 4, 0, false);
    uint64_t cmdq_rd = rd(c, SMMU_CMDQ_BASE, 8);
    printf("CMDQ_BASE=0x%016" PRIx64 "\n", cmdq_rd);
    CHECK(cmdq_rd == cmdq, "CMDQ_BASE reads %#" PRIx64 ", wrote %#" PRIx64, cmdq_rd, cmdq);
    CHECK((cmdq_rd & 0x1f) <= IDR1_CMDQS(idr1), "CMDQ_BASE.LOG2SIZE %u > IDR1.CMDQS %u",
          (unsigned)(cmdq_rd & 0x1f), IDR1_CMDQS(idr1));

    /* Argument and remote errors come back as negative errno. */
    uint64_t v = 0;
    int rc = vsmmu_mmio_read(c, SMMU_IDR0, 2, &v);
    CHECK(rc == -EINVAL && vsmmu_last_errno() == EINVAL && vsmmu_last_error()[0] != '\0',
          "2-byte read = %d", rc);
    rc = vsmmu_mmio_read(c, SMMU_IDR0, 4, NULL);
    CHECK(rc == -EINVAL, "read into NULL = %d", rc);
    rc = vsmmu_detach_device(c, 0x99);
    CHECK(rc == -ENOENT && vsmmu_last_errno() == ENOENT, "detach of unknown vSID = %d", rc);
    printf("detach_unknown=%d\n", rc);

    /* A device behind the vSMMU: vSID 0x10 (PCI 00:02.0), sim host. */
    uint32_t host_dev_id = 0;
    MUST(vsmmu_attach_device(c, 0x10, -1, &host_dev_id));
    printf("host_dev_id=%" PRIu32 "\n", host_dev_id);
    CHECK(host_dev_id == 1, "host dev id %" PRIu32, host_dev_id);
    rc = vsmmu_attach_device(c, 0x10, -1, NULL);
    CHECK(rc == -EEXIST, "second attach = %d", rc);

    /* Stats, snprintf style: the size first, then the text. Every call is
     * a message and the counters move between calls (the polling window
     * too), so the next text may be a few digits longer or shorter: room
     * to spare. */
    int need = vsmmu_get_stats(c, NULL, 0);
    CHECK(need > 2, "vsmmu_get_stats(NULL, 0) = %d (%s)", need, vsmmu_last_error());
    if (need > 2) {
        size_t cap = (size_t)need + 64;
        char *buf = malloc(cap);
        char small[8];
        CHECK(buf != NULL, "malloc");
        if (buf) {
            rc = vsmmu_get_stats(c, buf, cap);
            CHECK(rc > 2 && (size_t)rc < cap && strlen(buf) == (size_t)rc,
                  "stats length %d, first %d", rc, need);
            CHECK(rc > 2 && buf[0] == '{' && buf[rc - 1] == '}', "stats are not an object");
            printf("stats=%s\n", buf);
            free(buf);
        }
        /* Truncated: the whole length, and as much text as fits. */
        rc = vsmmu_get_stats(c, small, sizeof small);
        CHECK(rc >= (int)sizeof small && strlen(small) == sizeof small - 1,
              "truncated stats = %d", rc);
    }

    int alive = vsmmu_server_alive(c);
    printf("alive=%d\n", alive);
    CHECK(alive == 1, "vsmmu_server_alive = %d", alive);
    CHECK(vsmmu_socket_fd(c) >= 0, "no socket fd");

    /* The IOTLB and its invalidation ring, with a notify handler. */
    rc = vsmmu_notify_fd(c);
    CHECK(rc == -EINVAL, "notify fd before vsmmu_iotlb_enable = %d", rc);
    MUST(vsmmu_iotlb_enable(c, 6));
    CHECK(vsmmu_notify_fd(c) >= 0, "notify fd: %s", vsmmu_last_error());
    struct seen seen = { 0, 0 };
    MUST(vsmmu_notify_set_handler(c, on_invalidation, &seen));

    /* System reset: registers back to their reset values. */
    MUST(vsmmu_reset(c));
    uint64_t cr1_reset = rd(c, SMMU_CR1, 4);
    printf("CR1_after_reset=0x%08" PRIx64 "\n", cr1_reset);
    CHECK(cr1_reset == 0, "CR1 after reset %#" PRIx64, cr1_reset);
    /* The reset invalidated every translation: one record, kind ALL. */
    MUST(vsmmu_notify_drain(c));
    uint64_t hits = 1, misses = 1;
    MUST(vsmmu_iotlb_stats(c, &hits, &misses));
    printf("invalidations=%u kind=%u iotlb=%" PRIu64 "/%" PRIu64 "\n", seen.count,
           seen.last_kind, hits, misses);
    CHECK(seen.count == 1 && seen.last_kind == VSMMU_INVALIDATE_ALL, "invalidations");
    MUST(vsmmu_notify_set_handler(c, NULL, NULL));

    /* Unrealize. */
    MUST(vsmmu_detach_device(c, 0x10));
    for (unsigned i = 0; i < NR_IRQS; i++) {
        MUST(vsmmu_set_irq(c, i, -1));
    }
    if (ram_fd >= 0) {
        MUST(vsmmu_dma_unmap(c, RAM_BASE, RAM_SIZE));
    }
    vsmmu_close(c);
    CHECK(vsmmu_last_errno() == 0, "vsmmu_close: %s", vsmmu_last_error());

    /* The VMM's descriptors were borrowed, not consumed: still open. */
    for (unsigned i = 0; i < NR_IRQS; i++) {
        if (irq_fds[i] >= 0) {
            CHECK(fcntl(irq_fds[i], F_GETFD) >= 0, "irq eventfd %u was closed", i);
            close(irq_fds[i]);
        }
    }
    if (ram_fd >= 0) {
        CHECK(fcntl(ram_fd, F_GETFD) >= 0, "RAM memfd was closed");
        munmap(ram, RAM_SIZE);
        close(ram_fd);
    }
}

/* Scenario 2: the server dies under the VMM. */
static void server_killed(const char *vsmmud)
{
    struct vsmmu_client *c = open_server(vsmmud, NULL);
    if (!c) {
        return;
    }
    int pid = vsmmu_server_pid(c);
    CHECK(pid > 0, "server pid %d", pid);
    CHECK(vsmmu_server_alive(c) == 1, "not alive before the kill");
    if (pid > 0 && kill(pid, SIGKILL) < 0) {
        FAIL("kill %d: %s", pid, strerror(errno));
    }
    /* The hang-up is asynchronous: poll for up to 10 s. */
    int alive = 1;
    for (int i = 0; i < 1000 && alive == 1; i++) {
        alive = vsmmu_server_alive(c);
        if (alive == 1) {
            sleep_ms(10);
        }
    }
    printf("alive_after_kill=%d\n", alive);
    CHECK(alive == 0, "vsmmu_server_alive after SIGKILL = %d", alive);
    uint64_t v = 0;
    int rc = vsmmu_mmio_read(c, SMMU_IDR0, 4, &v);
    printf("read_after_kill=%s\n", rc == -EPIPE ? "-EPIPE" : "other");
    CHECK(rc == -EPIPE && vsmmu_last_errno() == EPIPE, "read after the kill = %d (%s)", rc,
          vsmmu_last_error());
    /* Closing reaps the dead server. */
    vsmmu_close(c);
}

int main(int argc, char **argv)
{
    const char *vsmmud = NULL;
    const char *sock_path = NULL;
    if (argc == 2 && strcmp(argv[1], "--socket") != 0) {
        vsmmud = argv[1];
    } else if (argc == 3 && strcmp(argv[1], "--socket") == 0) {
        sock_path = argv[2];
    } else {
        fprintf(stderr, "usage: %s VSMMUD_PATH | --socket PATH\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    probe(vsmmud, sock_path);
    if (!sock_path) {
        server_killed(vsmmud);
    }

    if (failures) {
        printf("result=FAIL (%d)\n", failures);
        return 1;
    }
    printf("result=PASS\n");
    return 0;
}
