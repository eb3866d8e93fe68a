/* zload: a load generator for zraft in C, so that the load generator is not what limits a benchmark.

   Speaks zraft's client protocol (docs/PROTOCOL.md) over ZeroMQ DEALER sockets to one node (the leader): N
   connections, each its own client session (a random client id, sequence numbers from 1, the ack field the lowest
   unanswered one), each keeping D requests in flight in a closed loop: the answers read from a socket in one pass
   are followed by as many new requests, sent as one batch frame ["C", [request, ...]] (of at most 1,024). Writes
   are puts; the mixed workload makes 90% of the requests linearizable gets, the read workload all of them; the txn
   workload's writes are one-compare-one-put transactions (if the key's mod_revision < 2^62, which always holds,
   then put). Keys "key0000".."key<K-1>", values of V bytes.
   With -rate R, each connection sends at most R/N requests a second (a paced run: latency at a given load).
   With -trace FILE, every request of the measured window slower than -trace-ms (default 8) is written to FILE as
   "<sent> <latency>" in seconds, sent on CLOCK_MONOTONIC (the clock of the nodes' time.monotonic), then a last line
   "window <start> <end>": to find when the slow ones happened (bench/paced_tail.py).

   CurveZMQ: the Z85 keys come from the environment (ZLOAD_SERVER_KEY, ZLOAD_PUBLIC_KEY, ZLOAD_SECRET_KEY), not
   the command line; without them the sockets are plain.

   Prints one JSON line: {"ops": answered in the measured window, "p50": s, "p99": s, "max": s, "cpu": this
   process's CPU seconds in the window (libzmq's I/O threads, which encrypt, included), "errors": n}.
   An answer with "ok": false (a leader change, a refusal) stops the run with exit code 1 and the reason.

   Build: cc -O2 -o zload zload.c -lzmq   (Debian: apt-get install -y libzmq3-dev)
*/
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zmq.h>

static FILE *trace;
static double trace_s = 0.008;

typedef struct {
    uint64_t id, seq;
    double sent;
} Req;

typedef struct {
    void *sock;
    uint64_t client, seq;
    Req *open; /* requests in flight, at most depth */
    int n_open;
    double next_send;
} Conn;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "zload: %s\n", what);
    exit(2);
}

/* ------------------------------------------------------------------ msgpack, the little this needs */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} Buf;

static void put(Buf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) die("out of memory");
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put1(Buf *b, unsigned c) {
    unsigned char x = (unsigned char)c;
    put(b, &x, 1);
}

static void put_be(Buf *b, uint64_t v, int bytes) {
    unsigned char x[8];
    for (int i = 0; i < bytes; i++) x[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    put(b, x, (size_t)bytes);
}

static void put_uint(Buf *b, uint64_t v) {
    if (v < 128) put1(b, (unsigned)v);
    else if (v < 256) { put1(b, 0xcc); put_be(b, v, 1); }
    else if (v < 65536) { put1(b, 0xcd); put_be(b, v, 2); }
    else if (v <= 0xffffffffULL) { put1(b, 0xce); put_be(b, v, 4); }
    else { put1(b, 0xcf); put_be(b, v, 8); }
}

static void put_str(Buf *b, const char *s) {
    size_t n = strlen(s); /* short strings only */
    put1(b, 0xa0 | (unsigned)n);
    put(b, s, n);
}

static void put_bin(Buf *b, const void *s, size_t n) {
    if (n < 256) { put1(b, 0xc4); put_be(b, n, 1); }
    else if (n < 65536) { put1(b, 0xc5); put_be(b, n, 2); }
    else { put1(b, 0xc6); put_be(b, n, 4); }
    put(b, s, n);
}

static void put_array(Buf *b, size_t n) {
    if (n < 16) put1(b, 0x90 | (unsigned)n);
    else if (n < 65536) { put1(b, 0xdc); put_be(b, n, 2); }
    else { put1(b, 0xdd); put_be(b, n, 4); }
}

typedef struct {
    const unsigned char *p, *end;
    int bad;
} Rd;

static uint64_t get_be(Rd *r, int bytes) {
    if (r->end - r->p < bytes) { r->bad = 1; return 0; }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = (v << 8) | r->p[i];
    r->p += bytes;
    return v;
}

static int get1(Rd *r) {
    if (r->p >= r->end) { r->bad = 1; return -1; }
    return *r->p++;
}

/* The length of a container or string at the cursor (after its type byte c), or -1. */
static int64_t len_of(Rd *r, int c, int *kind) { /* kind: 1 str, 2 bin, 3 array, 4 map */
    if ((c & 0xe0) == 0xa0) { *kind = 1; return c & 0x1f; }
    if ((c & 0xf0) == 0x90) { *kind = 3; return c & 0x0f; }
    if ((c & 0xf0) == 0x80) { *kind = 4; return c & 0x0f; }
    switch (c) {
    case 0xd9: *kind = 1; return (int64_t)get_be(r, 1);
    case 0xda: *kind = 1; return (int64_t)get_be(r, 2);
    case 0xdb: *kind = 1; return (int64_t)get_be(r, 4);
    case 0xc4: *kind = 2; return (int64_t)get_be(r, 1);
    case 0xc5: *kind = 2; return (int64_t)get_be(r, 2);
    case 0xc6: *kind = 2; return (int64_t)get_be(r, 4);
    case 0xdc: *kind = 3; return (int64_t)get_be(r, 2);
    case 0xdd: *kind = 3; return (int64_t)get_be(r, 4);
    case 0xde: *kind = 4; return (int64_t)get_be(r, 2);
    case 0xdf: *kind = 4; return (int64_t)get_be(r, 4);
    }
    *kind = 0;
    return -1;
}

/* Reads an unsigned integer (or a bool: 0/1); anything else sets bad. */
static uint64_t get_uint(Rd *r) {
    int c = get1(r);
    if (c < 0) return 0;
    if (c < 128) return (uint64_t)c;
    if (c == 0xc2) return 0;
    if (c == 0xc3) return 1;
    if (c >= 0xcc && c <= 0xcf) return get_be(r, 1 << (c - 0xcc));
    r->bad = 1;
    return 0;
}

static void skip(Rd *r, int depth) {
    if (depth > 32) { r->bad = 1; return; }
    int c = get1(r);
    if (c < 0) return;
    if (c < 128 || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return;
    if (c >= 0xcc && c <= 0xcf) { get_be(r, 1 << (c - 0xcc)); return; }
    if (c >= 0xd0 && c <= 0xd3) { get_be(r, 1 << (c - 0xd0)); return; }
    if (c == 0xca) { get_be(r, 4); return; }
    if (c == 0xcb) { get_be(r, 8); return; }
    int kind;
    int64_t n = len_of(r, c, &kind);
    if (n < 0 || r->bad) { r->bad = 1; return; }
    if (kind == 1 || kind == 2) {
        if (r->end - r->p < n) { r->bad = 1; return; }
        r->p += n;
    } else if (kind == 3) {
        for (int64_t i = 0; i < n && !r->bad; i++) skip(r, depth + 1);
    } else {
        for (int64_t i = 0; i < 2 * n && !r->bad; i++) skip(r, depth + 1);
    }
}

/* ------------------------------------------------------------------ the load */

#define MAX_BATCH 1024 /* requests in one frame, at most (the node's limit) */

static int keys = 1000, value_len = 64, mixed = 0; /* mixed: 1 for 90% gets, 2 for gets only, 3 for txns */
static unsigned char *value;
static uint64_t next_id = 1;
static uint64_t rng = 88172645463325252ULL;

static uint64_t rand64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double *lat;
static size_t n_lat, cap_lat;
static int measuring;

static void send_batch(Conn *c, int n, double t) {
    if (n <= 0) return;
    static Buf b;
    b.n = 0;
    put_array(&b, 2);
    put_str(&b, "C");
    put_array(&b, (size_t)n);
    uint64_t ack = c->seq + 1;
    for (int i = 0; i < c->n_open; i++)
        if (c->open[i].seq && c->open[i].seq < ack) ack = c->open[i].seq;
    for (int i = 0; i < n; i++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "key%04d", (int)(rand64() % (uint64_t)keys));
        Req *q = &c->open[c->n_open++];
        q->id = next_id++;
        q->sent = t;
        int get = mixed == 2 || (mixed == 1 && rand64() % 10 != 0);
        if (get) {
            q->seq = 0;
            put1(&b, 0x83);
            put_str(&b, "op"); put_str(&b, "get");
            put_str(&b, "key"); put_bin(&b, key, (size_t)kl);
            put_str(&b, "id"); put_uint(&b, q->id);
        } else if (mixed == 3) {
            q->seq = ++c->seq;
            put1(&b, 0x87);
            put_str(&b, "op"); put_str(&b, "txn");
            put_str(&b, "id"); put_uint(&b, q->id);
            put_str(&b, "if"); put_array(&b, 1); put_array(&b, 4);
            put_bin(&b, key, (size_t)kl); put_str(&b, "mod_revision"); put_str(&b, "<"); put_uint(&b, 1ULL << 62);
            put_str(&b, "then"); put_array(&b, 1); put_array(&b, 3);
            put_str(&b, "put"); put_bin(&b, key, (size_t)kl); put_bin(&b, value, (size_t)value_len);
            put_str(&b, "client"); put_uint(&b, c->client);
            put_str(&b, "seq"); put_uint(&b, q->seq);
            put_str(&b, "ack"); put_uint(&b, ack);
        } else {
            q->seq = ++c->seq;
            put1(&b, 0x87);
            put_str(&b, "op"); put_str(&b, "put");
            put_str(&b, "key"); put_bin(&b, key, (size_t)kl);
            put_str(&b, "id"); put_uint(&b, q->id);
            put_str(&b, "value"); put_bin(&b, value, (size_t)value_len);
            put_str(&b, "client"); put_uint(&b, c->client);
            put_str(&b, "seq"); put_uint(&b, q->seq);
            put_str(&b, "ack"); put_uint(&b, ack);
        }
    }
    if (zmq_send(c->sock, b.p, b.n, 0) < 0) die(zmq_strerror(errno));
}

/* Reads every answer waiting on c; returns how many requests were answered. */
static int drain(Conn *c, double t) {
    int done = 0;
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, c->sock, ZMQ_DONTWAIT) >= 0) {
        Rd r = {zmq_msg_data(&m), (const unsigned char *)zmq_msg_data(&m) + zmq_msg_size(&m), 0};
        int kind;
        int c0 = get1(&r);
        int64_t n = len_of(&r, c0, &kind);
        if (kind != 3 || n != 2) die("an answer that is not [\"C\", [...]]");
        skip(&r, 0);
        const unsigned char *at = r.p;
        int c1 = get1(&r);
        int64_t items = len_of(&r, c1, &kind);
        if (kind == 4) { /* one answer, not in a batch: the node refused the frame as a whole */
            items = 1;
            r.p = at;
        } else if (kind != 3 || r.bad) die("an answer that is not [\"C\", [...]] or [\"C\", {...}]");
        for (int64_t i = 0; i < items && !r.bad; i++) {
            int64_t fields = len_of(&r, get1(&r), &kind);
            if (kind != 4) die("an answer that is not a map");
            uint64_t id = 0, ok = 0;
            char why[64] = "", what[256] = "";
            for (int64_t f = 0; f < fields && !r.bad; f++) {
                int kc = get1(&r);
                int64_t kl = len_of(&r, kc, &kind);
                if (kind != 1 || r.end - r.p < kl) die("a map key that is not a string");
                const char *k = (const char *)r.p;
                r.p += kl;
                if (kl == 2 && !memcmp(k, "id", 2)) id = get_uint(&r);
                else if (kl == 2 && !memcmp(k, "ok", 2)) ok = get_uint(&r);
                else if ((kl == 5 && !memcmp(k, "error", 5)) || (kl == 7 && !memcmp(k, "message", 7))) {
                    char *dst = kl == 5 ? why : what;
                    size_t cap = kl == 5 ? sizeof why : sizeof what;
                    int64_t wl = len_of(&r, get1(&r), &kind);
                    if (kind != 1 || wl < 0 || r.end - r.p < wl) die("an error that is not a string");
                    memcpy(dst, r.p, (size_t)wl < cap - 1 ? (size_t)wl : cap - 1);
                    dst[(size_t)wl < cap - 1 ? (size_t)wl : cap - 1] = 0;
                    r.p += wl;
                } else skip(&r, 0);
            }
            if (r.bad) die("an answer that does not decode");
            if (!ok) {
                fprintf(stderr, "zload: request refused: %s: %s\n", why, what);
                exit(1);
            }
            int j;
            for (j = 0; j < c->n_open && c->open[j].id != id; j++) {}
            if (j == c->n_open) die("an answer to no request in flight");
            if (measuring) {
                if (n_lat == cap_lat) {
                    cap_lat = cap_lat ? 2 * cap_lat : 1 << 20;
                    lat = realloc(lat, cap_lat * sizeof *lat);
                    if (!lat) die("out of memory");
                }
                lat[n_lat++] = t - c->open[j].sent;
                if (trace && t - c->open[j].sent > trace_s)
                    fprintf(trace, "%.6f %.6f\n", c->open[j].sent, t - c->open[j].sent);
            }
            c->open[j] = c->open[--c->n_open];
            done++;
        }
    }
    zmq_msg_close(&m);
    if (errno != EAGAIN) die(zmq_strerror(errno));
    return done;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *endpoint = NULL;
    int conns = 4, depth = 32;
    double warmup = 2, seconds = 10, rate = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "-endpoint")) endpoint = v;
        else if (!strcmp(k, "-conns")) conns = atoi(v);
        else if (!strcmp(k, "-depth")) depth = atoi(v);
        else if (!strcmp(k, "-warmup")) warmup = atof(v);
        else if (!strcmp(k, "-seconds")) seconds = atof(v);
        else if (!strcmp(k, "-rate")) rate = atof(v);
        else if (!strcmp(k, "-keys")) keys = atoi(v);
        else if (!strcmp(k, "-value")) value_len = atoi(v);
        else if (!strcmp(k, "-workload")) mixed = !strcmp(v, "mixed") ? 1 : !strcmp(v, "read") ? 2 : !strcmp(v, "txn") ? 3 : 0;
        else if (!strcmp(k, "-trace")) {
            trace = fopen(v, "w");
            if (!trace) {
                fprintf(stderr, "zload: cannot write %s: %s\n", v, strerror(errno));
                return 2;
            }
        } else if (!strcmp(k, "-trace-ms")) trace_s = atof(v) / 1000;
        else {
            fprintf(stderr, "zload: unknown option %s\n", k);
            return 2;
        }
    }
    if (!endpoint || conns < 1 || depth < 1 || keys < 1 || value_len < 0) {
        fprintf(stderr, "usage: zload -endpoint HOST:PORT [-conns N] [-depth D] [-warmup S] [-seconds S] "
                        "[-rate OPS] [-keys K] [-value BYTES] [-workload write|mixed|read|txn] [-trace FILE] "
                        "[-trace-ms MS]\n");
        return 2;
    }
    value = malloc((size_t)value_len + 1);
    memset(value, 'v', (size_t)value_len);
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&rng, sizeof rng, 1, ur) != 1) die("cannot read /dev/urandom");
    fclose(ur);
    rng |= 1;
    const char *server = getenv("ZLOAD_SERVER_KEY"), *pub = getenv("ZLOAD_PUBLIC_KEY"),
               *sec = getenv("ZLOAD_SECRET_KEY");
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1);
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, conns + 64);
    Conn *cs = calloc((size_t)conns, sizeof *cs);
    zmq_pollitem_t *items = calloc((size_t)conns, sizeof *items);
    char addr[300];
    snprintf(addr, sizeof addr, "tcp://%s", endpoint);
    for (int i = 0; i < conns; i++) {
        Conn *c = &cs[i];
        c->sock = zmq_socket(ctx, ZMQ_DEALER);
        if (!c->sock) die(zmq_strerror(errno));
        int zero = 0;
        zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
        if (server && pub && sec) {
            if (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, server, 40) || zmq_setsockopt(c->sock,
                ZMQ_CURVE_PUBLICKEY, pub, 40) || zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, sec, 40))
                die("bad CurveZMQ keys (40 characters of Z85 each)");
        }
        if (zmq_connect(c->sock, addr)) die(zmq_strerror(errno));
        c->client = (rand64() >> 2) | 1;
        c->open = calloc((size_t)depth, sizeof(Req));
        items[i].socket = c->sock;
        items[i].events = ZMQ_POLLIN;
    }
    /* A frame holds at most MAX_BATCH requests and stays under the node's 4 MiB limit for a client frame. */
    int per_frame = (int)(((4 << 20) - (64 << 10)) / (value_len + 128));
    if (per_frame > MAX_BATCH) per_frame = MAX_BATCH;
    if (per_frame < 1) per_frame = 1;
    double interval = rate > 0 ? conns / rate : 0;
    double t0 = now_s(), start = t0 + warmup, end = start + seconds, cpu0 = 0;
    for (int i = 0; i < conns; i++) {
        Conn *c = &cs[i];
        c->next_send = t0 + (interval ? interval * i / conns : 0);
    }
    for (;;) {
        double t = now_s();
        if (!measuring && t >= start) {
            measuring = 1;
            cpu0 = cpu_s();
        }
        if (t >= end) break;
        /* Send what may go now: the closed loop's refills, or the paced schedule's due requests. */
        for (int i = 0; i < conns; i++) {
            Conn *c = &cs[i];
            int n = 0;
            while (c->n_open + n < depth && (!interval || c->next_send <= t + 0.001)) {
                n++;
                if (interval) c->next_send = c->next_send + interval > t - 1.0 ? c->next_send + interval : t - 1.0;
            }
            for (int k = 0; k < n; k += per_frame) send_batch(c, n - k < per_frame ? n - k : per_frame, t);
        }
        long wait_ms = 100;
        if (interval) wait_ms = 1;
        if (zmq_poll(items, conns, wait_ms) < 0) die(zmq_strerror(errno));
        t = now_s();
        for (int i = 0; i < conns; i++)
            if (items[i].revents & ZMQ_POLLIN) drain(&cs[i], t);
    }
    double cpu = cpu_s() - cpu0;
    if (trace) {
        fprintf(trace, "window %.6f %.6f\n", start, end);
        fclose(trace);
    }
    if (n_lat == 0) die("no request was answered in the measured window");
    qsort(lat, n_lat, sizeof *lat, cmp);
    printf("{\"ops\": %zu, \"p50\": %.6f, \"p99\": %.6f, \"max\": %.6f, \"cpu\": %.3f, \"errors\": 0}\n", n_lat,
           lat[n_lat / 2], lat[(size_t)(n_lat * 0.99)], lat[n_lat - 1], cpu);
    for (int i = 0; i < conns; i++) zmq_close(cs[i].sock);
    zmq_ctx_term(ctx);
    return 0;
}
