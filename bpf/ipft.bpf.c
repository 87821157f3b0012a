// ipft-web: one BCC program for every backend.
//
// Kernel struct fields are read at byte offsets taken from BTF (or DWARF) at run
// time and written into the config map with the mark and mask (OFF_* below), never
// through header struct layouts; the skb tracepoints' argument positions are map
// contents too. So the compiled program depends neither on what the user asks for
// nor on the kernel: it is compiled once, before tracing starts, and one image
// serves every kernel (ipft_web/bpfcache.py keys it without the kernel).
//
// Generated code appended by ipft_web/program.py holds only integers: the
// raw-tracepoint entries, one per slot (IPFT_TP_SLOT(slot)), the same for every kernel.
//
// User-chosen fields (--field skb->dev->name) are offset chains in the ipft_fields map, filled by
// ipft_web/fields/bpfmap.py: the program follows each chain with bounded probe reads and copies a
// fixed-size value per field into the event. No field path ever reaches this text.

#include <uapi/linux/ptrace.h>

#define KIND_KPROBE 0
#define KIND_TP 1
#define KIND_DROP 2     /* skb:kfree_skb: carries reason + location */
#define KIND_CONSUME 3  /* skb:consume_skb */
#define KIND_FREE 4     /* kfree_skbmem: the skb's memory goes back */

#define UNSET16 0xffff

#define IPFT_MAX_FIELDS 8
#define IPFT_FIELD_SIZE 16
#define IPFT_FIELD_DEREFS 4

/* Where a field's chain starts (struct ipft_field.base). */
#define FIELD_BASE_SKB 0       /* the skb itself */
#define FIELD_BASE_HEAD32 1    /* skb->head + (u32 at skb + base_off): skb_shinfo() via skb->end */
#define FIELD_BASE_HEAD16 2    /* skb->head + (u16 at skb + base_off): a header offset, 0xffff = unset */
#define FIELD_BASE_PTR_LOW3 3  /* (u64 at skb + base_off) & ~7: skb->_nfct -> struct nf_conn */

/* What happened reading a field (ipft_event.fstate[i]). */
#define FIELD_OK 0
#define FIELD_NULL 1        /* a NULL pointer on the way */
#define FIELD_UNREADABLE 2  /* a probe read failed */
#define FIELD_NO_HEADER 3   /* the header offset is unset */

struct ipft_field {
    u8 base;
    u8 nderef;     /* pointers followed after the base (<= IPFT_FIELD_DEREFS) */
    u8 size;       /* bytes copied at the end (<= IPFT_FIELD_SIZE) */
    u8 pad;
    s32 base_off;
    s32 deref[IPFT_FIELD_DEREFS];
    s32 off;       /* offset of the value in the last struct */
};

/* Offsets of the kernel struct fields the program reads (ipft_web/program.py FIELDS, same order). */
#define IPFT_N_OFFSETS 11
#define OFF_SKB_LEN (cfg->off[0])
#define OFF_SKB_MARK (cfg->off[1])
#define OFF_SKB_DEV (cfg->off[2])
#define OFF_SKB_SK (cfg->off[3])
#define OFF_SKB_HEAD (cfg->off[4])
#define OFF_SKB_NETWORK_HEADER (cfg->off[5])
#define OFF_DEV_IFINDEX (cfg->off[6])
#define OFF_DEV_NAME (cfg->off[7])
#define OFF_DEV_ND_NET (cfg->off[8])
#define OFF_NET_INUM (cfg->off[9])
#define OFF_SK_NET (cfg->off[10])

#define IPFT_MAX_TP_SLOTS 48

struct ipft_config {
    u32 mark;
    u32 mask;
    u32 off[IPFT_N_OFFSETS];
    s32 kfree_location_arg;   /* skb:kfree_skb's argument positions, -1 when it has none */
    s32 kfree_reason_arg;
    u32 kfree_slot;           /* the slots events of skb:kfree_skb / skb:consume_skb carry */
    u32 consume_slot;
    u8 tp_arg[IPFT_MAX_TP_SLOTS];   /* the skb's argument position of each tracepoint slot */
    /* At least the number of skbs in ipft_tracked (LRU evictions only leave it higher): while it is
     * 0, an unmarked skb is not looked up at all, which is every hit of unmarked traffic. Kept here,
     * not in a map of its own, so that an unmarked hit looks up one map, not two. 0 when written. */
    u64 ntracked;
};

struct ipft_event {
    u64 skb;
    u64 ts;
    u64 addr;      /* function address (kprobe) or tracepoint slot */
    u64 location;  /* kfree_skb: where it was dropped */
    u32 cpu;
    u32 len;
    u32 mark;
    u32 ifindex;
    u32 netns;
    u32 reason;
    u8 family;     /* 4, 6, or 0 when no IP header was found */
    u8 l4proto;
    u8 kind;
    u8 pad;
    u8 l4[4];      /* TCP/UDP: sport, dport (network order); ICMP: type, code */
    u16 ip_id;     /* IPv4 identification (network order): tells packets in a reused skb apart */
    u16 pad2;
    u32 pad3;
    u8 saddr[16];
    u8 daddr[16];
    char ifname[16];
    /* Only sent when fields were asked for: fstate + the first nfields values. */
    u8 fstate[IPFT_MAX_FIELDS];                 /* FIELD_OK / FIELD_NULL / ... */
    u8 fval[IPFT_MAX_FIELDS][IPFT_FIELD_SIZE];
};

#define IPFT_EVENT_BASE_SIZE __builtin_offsetof(struct ipft_event, fstate)

BPF_ARRAY(ipft_config, struct ipft_config, 1);
BPF_TABLE("lru_hash", u64, u64, ipft_tracked, 65536);
BPF_PERCPU_ARRAY(ipft_lost, u64, 1);
BPF_RINGBUF_OUTPUT(ipft_events, IPFT_RINGBUF_PAGES);
BPF_ARRAY(ipft_fields, struct ipft_field, IPFT_MAX_FIELDS);
BPF_ARRAY(ipft_nfields, u32, 1);
/* kfree_skbmem's address, for kprobe_multi_skb_1 (0: not in its link) */
BPF_ARRAY(ipft_free_addr, u64, 1);

static __always_inline void ipft_read_tuple(struct ipft_config *cfg, struct ipft_event *e, void *skb)
{
    unsigned char *head = NULL;
    u16 nh = UNSET16;
    u8 vb = 0;

    bpf_probe_read_kernel(&head, sizeof(head), skb + OFF_SKB_HEAD);
    bpf_probe_read_kernel(&nh, sizeof(nh), skb + OFF_SKB_NETWORK_HEADER);
    if (!head || nh == UNSET16)
        return;
    if (bpf_probe_read_kernel(&vb, 1, head + nh))
        return;

    u32 l4off;
    u8 proto = 0;
    if ((vb >> 4) == 4) {
        if ((vb & 0xf) < 5)
            return;
        bpf_probe_read_kernel(&e->ip_id, 2, head + nh + 4);
        bpf_probe_read_kernel(&proto, 1, head + nh + 9);
        bpf_probe_read_kernel(e->saddr, 4, head + nh + 12);
        bpf_probe_read_kernel(e->daddr, 4, head + nh + 16);
        e->family = 4;
        l4off = nh + (vb & 0xf) * 4;
    } else if ((vb >> 4) == 6) {
        bpf_probe_read_kernel(&proto, 1, head + nh + 6);
        bpf_probe_read_kernel(e->saddr, 16, head + nh + 8);
        bpf_probe_read_kernel(e->daddr, 16, head + nh + 24);
        e->family = 6;
        l4off = nh + 40;
    } else {
        return;
    }
    e->l4proto = proto;
    if (proto == 6 || proto == 17 || proto == 1 || proto == 58)
        bpf_probe_read_kernel(e->l4, 4, head + l4off);
}

static __always_inline u32 ipft_netns_of(struct ipft_config *cfg, void *net_ptr_addr)
{
    void *net = NULL;
    u32 inum = 0;
    bpf_probe_read_kernel(&net, sizeof(net), net_ptr_addr);
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), net + OFF_NET_INUM);
    return inum;
}

static __always_inline u8 ipft_read_field(struct ipft_config *cfg, u8 *out, void *skb, struct ipft_field *f)
{
    void *p = skb;
    u8 base = f->base;

    if (base == FIELD_BASE_HEAD32 || base == FIELD_BASE_HEAD16) {
        unsigned char *head = NULL;
        u32 off = 0;
        bpf_probe_read_kernel(&head, sizeof(head), skb + OFF_SKB_HEAD);
        if (!head)
            return FIELD_NULL;
        if (base == FIELD_BASE_HEAD32) {
            if (bpf_probe_read_kernel(&off, sizeof(off), skb + f->base_off))
                return FIELD_UNREADABLE;
        } else {
            u16 off16 = UNSET16;
            bpf_probe_read_kernel(&off16, sizeof(off16), skb + f->base_off);
            if (off16 == UNSET16)
                return FIELD_NO_HEADER;
            off = off16;
        }
        p = head + off;
    } else if (base == FIELD_BASE_PTR_LOW3) {
        u64 v = 0;
        if (bpf_probe_read_kernel(&v, sizeof(v), skb + f->base_off))
            return FIELD_UNREADABLE;
        v &= ~7ULL;
        if (!v)
            return FIELD_NULL;
        p = (void *)v;
    }
    u8 nderef = f->nderef;
#pragma nounroll
    for (int s = 0; s < IPFT_FIELD_DEREFS; s++) {
        if (s < nderef) {
            void *next = NULL;
            if (bpf_probe_read_kernel(&next, sizeof(next), p + f->deref[s]))
                return FIELD_UNREADABLE;
            if (!next)
                return FIELD_NULL;
            p = next;
        }
    }
    u32 size = f->size;  /* 0 is allowed (reads nothing) */
    if (size > IPFT_FIELD_SIZE)
        return FIELD_UNREADABLE;
    if (bpf_probe_read_kernel(out, size, p + f->off))
        return FIELD_UNREADABLE;
    return FIELD_OK;
}

/* Reads the first n configured fields into the event. */
static __always_inline void ipft_read_fields(struct ipft_config *cfg, struct ipft_event *e, void *skb, u32 n)
{
#pragma nounroll
    for (int i = 0; i < IPFT_MAX_FIELDS; i++) {
        if (i < n) {
            u32 idx = i;
            struct ipft_field *f = ipft_fields.lookup(&idx);
            if (f)
                e->fstate[i] = ipft_read_field(cfg, e->fval[i], skb, f);
        }
    }
}

/* `func_ip`: `addr` is the probed function's address, asked of the kernel only once the packet is
 * known to be followed (for kprobes, bpf_get_func_ip() looks up the running kprobe and reads the
 * instruction before it: unmarked traffic should not pay that at every hit). `free_check`: the hit
 * is kfree_skbmem's when that address is the one in ipft_free_addr (kprobe-multi links it with the
 * position-1 functions: one link fewer, and only followed hits compare). */
static __always_inline int ipft_hit_at(void *ctx, void *skb, u64 addr, u8 kind,
                                       u64 location, u32 reason, int func_ip, int free_check)
{
    u32 zero = 0;
    u32 mark = 0;
    u64 key = (u64)skb;

    if (!skb)
        return 0;
    struct ipft_config *cfg = ipft_config.lookup(&zero);
    if (!cfg)
        return 0;
    bpf_probe_read_kernel(&mark, sizeof(mark), skb + OFF_SKB_MARK);
    u64 *ntracked = &cfg->ntracked;
    int marked = (mark & cfg->mask) == cfg->mark;
    /* Not (or no longer) marked: follow it only if it was marked before. */
    if (!marked && (*ntracked == 0 || !ipft_tracked.lookup(&key)))
        return 0;
    if (func_ip) {
        addr = bpf_get_func_ip(ctx);
        if (free_check) {
            u64 *free_addr = ipft_free_addr.lookup(&zero);
            if (free_addr && *free_addr == addr)
                kind = KIND_FREE;
        }
    }
    if (kind == KIND_FREE || kind == KIND_DROP || kind == KIND_CONSUME) {
        if (ipft_tracked.delete(&key) == 0)
            __sync_fetch_and_add(ntracked, -1);
    } else if (marked) {
        u64 one = 1;
        /* counted before it is added, uncounted after it is gone: never below the real number */
        __sync_fetch_and_add(ntracked, 1);
        if (ipft_tracked.insert(&key, &one) != 0)      /* already followed */
            __sync_fetch_and_add(ntracked, -1);
    }

    struct ipft_event e = {};
    e.skb = key;
    e.ts = bpf_ktime_get_ns();
    e.addr = addr;
    e.location = location;
    e.reason = reason;
    e.kind = kind;
    e.cpu = bpf_get_smp_processor_id();
    e.mark = mark;
    bpf_probe_read_kernel(&e.len, sizeof(e.len), skb + OFF_SKB_LEN);

    void *dev = NULL;
    bpf_probe_read_kernel(&dev, sizeof(dev), skb + OFF_SKB_DEV);
    if (dev) {
        bpf_probe_read_kernel(&e.ifindex, sizeof(e.ifindex), dev + OFF_DEV_IFINDEX);
        bpf_probe_read_kernel(e.ifname, sizeof(e.ifname), dev + OFF_DEV_NAME);
        e.netns = ipft_netns_of(cfg, dev + OFF_DEV_ND_NET);
    } else {
        void *sk = NULL;
        bpf_probe_read_kernel(&sk, sizeof(sk), skb + OFF_SKB_SK);
        if (sk)
            e.netns = ipft_netns_of(cfg, sk + OFF_SK_NET);
    }
    if (kind != KIND_FREE)
        ipft_read_tuple(cfg, &e, skb);

    /* Fields are not read at kfree_skbmem: the data behind the skb is gone by then. */
    u64 size = IPFT_EVENT_BASE_SIZE;
#ifdef IPFT_FIELDS
    /* Compiled only into the variant for sessions with fields: the loops cost verifier work that
     * older kernels (6.1) refuse on top of the rest ("program too large"). */
    u32 *nfields = ipft_nfields.lookup(&zero);
    u32 n = nfields ? *nfields : 0;
    if (n > IPFT_MAX_FIELDS)
        n = IPFT_MAX_FIELDS;
    if (n && kind != KIND_FREE) {
        ipft_read_fields(cfg, &e, skb, n);
        size = IPFT_EVENT_BASE_SIZE + IPFT_MAX_FIELDS + n * IPFT_FIELD_SIZE;
    }
#endif
    if (ipft_events.ringbuf_output(&e, size, 0)) {
        u64 *lost = ipft_lost.lookup(&zero);
        if (lost)
            *lost += 1;
    }
    return 0;
}

#define ipft_hit(ctx, skb, addr, kind, location, reason) ipft_hit_at(ctx, skb, addr, kind, location, reason, 0, 0)
#define ipft_hit_func(ctx, skb, kind) ipft_hit_at(ctx, skb, 0, kind, 0, 0, 1, 0)

/* kprobe entries, one per position of the struct sk_buff * argument. */
int kprobe_skb_1(struct pt_regs *ctx) { return ipft_hit_func(ctx, (void *)PT_REGS_PARM1(ctx), KIND_KPROBE); }
int kprobe_skb_2(struct pt_regs *ctx) { return ipft_hit_func(ctx, (void *)PT_REGS_PARM2(ctx), KIND_KPROBE); }
int kprobe_skb_3(struct pt_regs *ctx) { return ipft_hit_func(ctx, (void *)PT_REGS_PARM3(ctx), KIND_KPROBE); }
int kprobe_skb_4(struct pt_regs *ctx) { return ipft_hit_func(ctx, (void *)PT_REGS_PARM4(ctx), KIND_KPROBE); }
int kprobe_skb_5(struct pt_regs *ctx) { return ipft_hit_func(ctx, (void *)PT_REGS_PARM5(ctx), KIND_KPROBE); }
int kprobe_free(struct pt_regs *ctx) { return ipft_hit_func(ctx, (void *)PT_REGS_PARM1(ctx), KIND_FREE); }

/* kprobe-multi's links, four where one per position would be six (each link is an ftrace update to
 * make and to undo): kprobe_skb_2 and _3 as they are; position 1 with kfree_skbmem; positions 4 and
 * 5 together, the position in the link cookie. A cookie costs a binary search of the link's
 * addresses at every hit: paid here only over the few functions of positions 4 and 5, which
 * hardly run (13 of 970,000 hits in a TCP run). */
int kprobe_multi_skb_1(struct pt_regs *ctx)
{
    return ipft_hit_at(ctx, (void *)PT_REGS_PARM1(ctx), 0, KIND_KPROBE, 0, 0, 1, 1);
}

int kprobe_multi_skb_45(struct pt_regs *ctx)
{
    u64 r4 = PT_REGS_PARM4(ctx);
    u64 r5 = PT_REGS_PARM5(ctx);
    return ipft_hit_func(ctx, (void *)(bpf_get_attach_cookie(ctx) == 5 ? r5 : r4), KIND_KPROBE);
}

/* A raw tracepoint's argument at a position known at run time: copied out with a probe read (a
 * direct load would count as reading the context that far, and the kernel refuses to attach a
 * program reading past a tracepoint's last argument). */
static __always_inline u64 ipft_raw_arg(struct bpf_raw_tracepoint_args *ctx, s32 pos)
{
    void *at;
    switch (pos) {
    case 0: at = &ctx->args[0]; break;
    case 1: at = &ctx->args[1]; break;
    case 2: at = &ctx->args[2]; break;
    case 3: at = &ctx->args[3]; break;
    case 4: at = &ctx->args[4]; break;
    case 5: at = &ctx->args[5]; break;
    default: return 0;
    }
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), at);
    return v;
}

/* skb:kfree_skb and skb:consume_skb as raw tracepoints (args[0] is the skb). */
int tp_kfree_skb(struct bpf_raw_tracepoint_args *ctx)
{
    u32 zero = 0;
    struct ipft_config *cfg = ipft_config.lookup(&zero);
    if (!cfg)
        return 0;
    u64 location = ipft_raw_arg(ctx, cfg->kfree_location_arg);
    u32 reason = (u32)ipft_raw_arg(ctx, cfg->kfree_reason_arg);
    return ipft_hit(ctx, (void *)ctx->args[0], cfg->kfree_slot, KIND_DROP, location, reason);
}

int tp_consume_skb(struct bpf_raw_tracepoint_args *ctx)
{
    u32 zero = 0;
    struct ipft_config *cfg = ipft_config.lookup(&zero);
    if (!cfg)
        return 0;
    return ipft_hit(ctx, (void *)ctx->args[0], cfg->consume_slot, KIND_CONSUME, 0, 0);
}

static __always_inline int ipft_hit_slot(struct bpf_raw_tracepoint_args *ctx, u32 slot)
{
    u32 zero = 0;
    struct ipft_config *cfg = ipft_config.lookup(&zero);
    if (!cfg || slot >= IPFT_MAX_TP_SLOTS)
        return 0;
    return ipft_hit(ctx, (void *)ipft_raw_arg(ctx, cfg->tp_arg[slot]), slot, KIND_TP, 0, 0);
}

#define IPFT_TP_SLOT(slot) \
    int tp_slot_##slot(struct bpf_raw_tracepoint_args *ctx) { return ipft_hit_slot(ctx, slot); }

/* fentry entries (BPF_PROG_TYPE_TRACING): ctx is the argument array. BCC compiles them like any
 * function; ipft_web/backends/fentry.py loads their instructions once per traced function with
 * that function's BTF id. */
/* The argument is copied out with a probe read, so the verifier sees a plain number rather than a
 * typed kernel pointer (it refuses variable offsets from those, which the field reader uses). */
static __always_inline void *ipft_fentry_arg(u64 *ctx, int i)
{
    void *p = NULL;
    bpf_probe_read_kernel(&p, sizeof(p), &ctx[i]);
    return p;
}
#define IPFT_FENTRY(n) \
    int fentry_skb_##n(u64 *ctx) \
    { return ipft_hit_func(ctx, ipft_fentry_arg(ctx, n - 1), KIND_KPROBE); }
IPFT_FENTRY(1) IPFT_FENTRY(2) IPFT_FENTRY(3) IPFT_FENTRY(4) IPFT_FENTRY(5) IPFT_FENTRY(6)
int fentry_free(u64 *ctx) { return ipft_hit_func(ctx, ipft_fentry_arg(ctx, 0), KIND_FREE); }
