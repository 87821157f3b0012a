/* A miniature of the kernel types ipft-web reads, for tests/test_dwarf.py and
 * tests/test_catalog.py: compiled by the tests with `gcc -g -O2 -c` (and turned
 * into BTF with `pahole -J` when pahole is installed). */
typedef unsigned int __u32;
typedef unsigned short __u16;
typedef unsigned char __u8;

struct net;
struct ns_common { int count; unsigned int inum; };
struct net { int passive; struct ns_common ns; };
typedef struct { struct net *net; } possible_net_t;
struct net_device { int ifindex; char name[16]; possible_net_t nd_net; };
struct sock_common { int skc_family; possible_net_t skc_net; };
struct sock { struct sock_common __sk_common; int sk_rcvbuf; };

struct sk_buff {
	union {
		struct {
			struct sk_buff *next;
			struct sk_buff *prev;
			union {
				struct net_device *dev;
				unsigned long dev_scratch;
			};
		};
		int rbnode;
	};
	struct sock *sk;
	unsigned int len;
	__u8 pkt_type:3, ignore_df:1, cloned:1;
	__u16 flags:9, more:7;
	struct {
		__u32 mark;
		__u16 network_header;
		__u16 transport_header;
	};
	unsigned char *head;
	char cb[48];
	int matrix[2][3];
	void (*destructor)(struct sk_buff *skb);
	const volatile int cv;
	char *const cp;
};

typedef struct sk_buff skb_t;
typedef const struct sk_buff *cskb_p;

enum skb_drop_reason {
	SKB_NOT_DROPPED_YET = 0,
	SKB_CONSUMED,
	SKB_DROP_REASON_NOT_SPECIFIED,
	SKB_DROP_REASON_NETFILTER_DROP = 7,
	SKB_DROP_REASON_MAX,
};
enum neg { NEG_A = -5, NEG_B = 3 };

/* Raw tracepoint prototypes as the kernel's BTF has them (first param: the context). */
typedef void (*btf_trace_kfree_skb)(void *, struct sk_buff *, void *, enum skb_drop_reason);
typedef void (*btf_trace_net_dev_queue)(void *, struct sk_buff *);
typedef void (*btf_trace_qdisc_dequeue)(void *, struct sock *, int, const struct sk_buff *);
typedef void (*btf_trace_sched_switch)(void *, int, struct sock *);
btf_trace_kfree_skb tp_kfree_skb;
btf_trace_net_dev_queue tp_net_dev_queue;
btf_trace_qdisc_dequeue tp_qdisc_dequeue;
btf_trace_sched_switch tp_sched_switch;
enum neg neg_var;

int first(struct sk_buff *skb) { return skb->len; }
int third(int a, long b, const struct sk_buff *skb) { return a + b + skb->len; }
int via_typedef(int a, cskb_p skb) { return a + skb->len; }
int via_typedef2(skb_t *skb) { return skb->len; }
static int __attribute__((noinline)) helper(struct sock *sk, struct sk_buff *skb)
{
	return sk->sk_rcvbuf + skb->len;
}
int no_skb(int x, char *s, ...) { return x + s[0]; }
int uses(struct sock *sk, struct sk_buff *skb, enum skb_drop_reason r) { return helper(sk, skb) + r; }
int sixth(int a, int b, int c, int d, int e, struct sk_buff *skb) { return a + b + c + d + e + skb->len; }
