/* pcap packet tap: classic libpcap file format with nanosecond timestamps.
 *
 * Global header (24 bytes): magic 0xa1b23c4d (ns resolution), version 2.4, thiszone 0,
 * sigfigs 0, snaplen, LINKTYPE_ETHERNET (1). Record header (16 bytes): ts_sec, ts_nsec,
 * incl_len, orig_len. Everything in host byte order: readers detect it from the magic.
 * Writes go through a 64 KiB stdio buffer allocated once: no system call per frame. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nic/nic.h"

#define PCAP_MAGIC_NS          0xa1b23c4du
#define PCAP_LINKTYPE_ETHERNET 1u
#define PCAP_BUF_SIZE          (64u * 1024u)
#define PCAP_DEFAULT_SNAPLEN   262144u

struct pcap_tap {
    FILE *f;
    uint32_t snaplen;
    char *buf; /* stdio buffer, freed after fclose */
};

struct pcap_file_hdr {
    uint32_t magic;
    uint16_t vmajor, vminor;
    int32_t thiszone;
    uint32_t sigfigs, snaplen, linktype;
};
_Static_assert(sizeof(struct pcap_file_hdr) == 24, "pcap file header is 24 bytes");

struct pcap_rec_hdr {
    uint32_t ts_sec, ts_nsec, incl_len, orig_len;
};
_Static_assert(sizeof(struct pcap_rec_hdr) == 16, "pcap record header is 16 bytes");

static int ferr(FILE *f)
{
    int e = errno;
    clearerr(f);
    return e > 0 ? -e : -EIO;
}

struct pcap_tap *pcap_open(const char *path, uint32_t snaplen, int *err)
{
    int e = 0;
    struct pcap_tap *t = calloc(1, sizeof(*t));
    if (!t) {
        e = -ENOMEM;
        goto fail;
    }
    t->snaplen = snaplen ? snaplen : PCAP_DEFAULT_SNAPLEN;
    t->buf = malloc(PCAP_BUF_SIZE);
    if (!t->buf) {
        e = -ENOMEM;
        goto fail;
    }
    t->f = fopen(path, "wbe");
    if (!t->f) {
        e = -errno;
        goto fail;
    }
    if (setvbuf(t->f, t->buf, _IOFBF, PCAP_BUF_SIZE) != 0) {
        e = -EIO;
        goto fail;
    }
    struct pcap_file_hdr h = {
        .magic = PCAP_MAGIC_NS,
        .vmajor = 2,
        .vminor = 4,
        .thiszone = 0,
        .sigfigs = 0,
        .snaplen = t->snaplen,
        .linktype = PCAP_LINKTYPE_ETHERNET,
    };
    errno = 0;
    if (fwrite(&h, sizeof(h), 1, t->f) != 1) {
        e = ferr(t->f);
        goto fail;
    }
    if (err)
        *err = 0;
    return t;
fail:
    if (t) {
        if (t->f)
            fclose(t->f);
        free(t->buf);
        free(t);
    }
    if (err)
        *err = e;
    return NULL;
}

int pcap_write(struct pcap_tap *t, const uint8_t *frame, uint32_t len, uint64_t ts_ns)
{
    uint32_t incl = len < t->snaplen ? len : t->snaplen;
    struct pcap_rec_hdr r = {
        .ts_sec = (uint32_t)(ts_ns / 1000000000u),
        .ts_nsec = (uint32_t)(ts_ns % 1000000000u),
        .incl_len = incl,
        .orig_len = len,
    };
    errno = 0;
    /* Several workers write to one capture: stdio's own stream lock keeps each record
     * (header + frame) in one piece. Uncontended with one worker. */
    flockfile(t->f);
    int rc = 0;
    if (fwrite(&r, sizeof(r), 1, t->f) != 1 || (incl && fwrite(frame, incl, 1, t->f) != 1))
        rc = ferr(t->f);
    funlockfile(t->f);
    return rc;
}

void pcap_close(struct pcap_tap *t)
{
    if (!t)
        return;
    fclose(t->f); /* flushes the buffer */
    free(t->buf);
    free(t);
}
