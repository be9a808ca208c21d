/* SPDX-License-Identifier: MIT */
/*
 * Small helpers for the BPF side of the mpq tools: log2 slots for
 * histograms, and the context of the mpq tracepoints.
 */
#ifndef MPQ_BITS_BPF_H
#define MPQ_BITS_BPF_H

/*
 * The slot of v in a log2 histogram: 0 for 0, else 1 + floor(log2(v)),
 * so that slot i holds [2^(i-1), 2^i). Branch-free, as the verifier
 * prefers.
 */
static __always_inline __u64 mpq_log2_slot(__u64 v)
{
	__u64 r = 0, s;

	if (!v)
		return 0;
	s = (v > 0xffffffffULL) << 5; v >>= s; r |= s;
	s = (v > 0xffff) << 4; v >>= s; r |= s;
	s = (v > 0xff) << 3; v >>= s; r |= s;
	s = (v > 0xf) << 2; v >>= s; r |= s;
	s = (v > 0x3) << 1; v >>= s; r |= s;
	r |= (v >> 1);
	return r + 1;
}

#endif /* MPQ_BITS_BPF_H */
