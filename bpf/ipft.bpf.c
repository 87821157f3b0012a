// ipft-web: one BCC program for every backend.
//
// Kernel struct fields are read at byte offsets taken from BTF (or DWARF) at run
// time and passed in as -D constants (OFF_*), never through header struct
// layouts: that is what lets BCC compile this against any installed header tree.
// The mark and mask live in a map, so the compiled program does not depend on
// what the user asks for and can be compiled before tracing starts.
//
// Generated code appended by ipft_web/program.py holds only integers: one
// raw-tracepoint entry per skb tracepoint slot (IPFT_TP_SLOT(slot, argidx)).

#include <uapi/linux/ptrace.h>

#define KIND_KPROBE 0
#define KIND_TP 1
#define KIND_DROP 2     /* skb:kfree_skb: carries reason + location */
#define KIND_CONSUME 3  /* skb:consume_skb */
#define KIND_FREE 4     /* kfree_skbmem: the skb's memory goes back */

#define UNSET16 0xffff

struct ipft_config {
    u32 mark;
    u32 mask;
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
};

BPF_ARRAY(ipft_config, struct ipft_config, 1);
BPF_TABLE("lru_hash", u64, u64, ipft_tracked, 65536);
BPF_PERCPU_ARRAY(ipft_lost, u64, 1);
BPF_RINGBUF_OUTPUT(ipft_events, IPFT_RINGBUF_PAGES);

static __always_inline void ipft_read_tuple(struct ipft_event *e, void *skb)
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

static __always_inline u32 ipft_netns_of(void *net_ptr_addr)
{
    void *net = NULL;
    u32 inum = 0;
    bpf_probe_read_kernel(&net, sizeof(net), net_ptr_addr);
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), net + OFF_NET_INUM);
    return inum;
}

static __always_inline int ipft_hit(void *ctx, void *skb, u64 addr, u8 kind,
                                    u64 location, u32 reason)
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
    if ((mark & cfg->mask) != cfg->mark) {
        /* Not (or no longer) marked: follow it only if it was marked before. */
        if (!ipft_tracked.lookup(&key))
            return 0;
    } else if (kind != KIND_FREE && kind != KIND_DROP && kind != KIND_CONSUME) {
        u64 one = 1;
        ipft_tracked.update(&key, &one);
    }
    if (kind == KIND_FREE || kind == KIND_DROP || kind == KIND_CONSUME)
        ipft_tracked.delete(&key);

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
        e.netns = ipft_netns_of(dev + OFF_DEV_ND_NET);
    } else {
        void *sk = NULL;
        bpf_probe_read_kernel(&sk, sizeof(sk), skb + OFF_SKB_SK);
        if (sk)
            e.netns = ipft_netns_of(sk + OFF_SK_NET);
    }
    if (kind != KIND_FREE)
        ipft_read_tuple(&e, skb);

    if (ipft_events.ringbuf_output(&e, sizeof(e), 0)) {
        u64 *lost = ipft_lost.lookup(&zero);
        if (lost)
            *lost += 1;
    }
    return 0;
}

/* kprobe entries, one per position of the struct sk_buff * argument. */
int kprobe_skb_1(struct pt_regs *ctx) { return ipft_hit(ctx, (void *)PT_REGS_PARM1(ctx), bpf_get_func_ip(ctx), KIND_KPROBE, 0, 0); }
int kprobe_skb_2(struct pt_regs *ctx) { return ipft_hit(ctx, (void *)PT_REGS_PARM2(ctx), bpf_get_func_ip(ctx), KIND_KPROBE, 0, 0); }
int kprobe_skb_3(struct pt_regs *ctx) { return ipft_hit(ctx, (void *)PT_REGS_PARM3(ctx), bpf_get_func_ip(ctx), KIND_KPROBE, 0, 0); }
int kprobe_skb_4(struct pt_regs *ctx) { return ipft_hit(ctx, (void *)PT_REGS_PARM4(ctx), bpf_get_func_ip(ctx), KIND_KPROBE, 0, 0); }
int kprobe_skb_5(struct pt_regs *ctx) { return ipft_hit(ctx, (void *)PT_REGS_PARM5(ctx), bpf_get_func_ip(ctx), KIND_KPROBE, 0, 0); }
int kprobe_free(struct pt_regs *ctx) { return ipft_hit(ctx, (void *)PT_REGS_PARM1(ctx), bpf_get_func_ip(ctx), KIND_FREE, 0, 0); }

/* skb:kfree_skb and skb:consume_skb as raw tracepoints (args[0] is the skb). */
int tp_kfree_skb(struct bpf_raw_tracepoint_args *ctx)
{
    u64 location = 0;
    u32 reason = 0;
#ifdef KFREE_SKB_LOCATION_ARG
    location = ctx->args[KFREE_SKB_LOCATION_ARG];
#endif
#ifdef KFREE_SKB_REASON_ARG
    reason = (u32)ctx->args[KFREE_SKB_REASON_ARG];
#endif
    return ipft_hit(ctx, (void *)ctx->args[0], TP_SLOT_KFREE_SKB, KIND_DROP, location, reason);
}

int tp_consume_skb(struct bpf_raw_tracepoint_args *ctx)
{
    return ipft_hit(ctx, (void *)ctx->args[0], TP_SLOT_CONSUME_SKB, KIND_CONSUME, 0, 0);
}

#define IPFT_TP_SLOT(slot, argidx) \
    int tp_slot_##slot(struct bpf_raw_tracepoint_args *ctx) \
    { return ipft_hit(ctx, (void *)ctx->args[argidx], slot, KIND_TP, 0, 0); }

/* fentry entries (BPF_PROG_TYPE_TRACING): ctx is the argument array. BCC compiles them like any
 * function; ipft_web/backends/fentry.py loads their instructions once per traced function with
 * that function's BTF id. kprobe-multi reuses the kprobe_skb_N entries. */
#define IPFT_FENTRY(n) \
    int fentry_skb_##n(u64 *ctx) \
    { return ipft_hit(ctx, (void *)ctx[n - 1], bpf_get_func_ip(ctx), KIND_KPROBE, 0, 0); }
IPFT_FENTRY(1) IPFT_FENTRY(2) IPFT_FENTRY(3) IPFT_FENTRY(4) IPFT_FENTRY(5) IPFT_FENTRY(6)
int fentry_free(u64 *ctx) { return ipft_hit(ctx, (void *)ctx[0], bpf_get_func_ip(ctx), KIND_FREE, 0, 0); }
