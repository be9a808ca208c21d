// SPDX-License-Identifier: MIT
/*
 * A Connection over a connected stream socket, in Python's own framing:
 * what multiprocessing.connection.Connection speaks on Unix, so that a
 * C program and a Python program can exchange messages over one socket.
 *
 * A message is a 4-byte big-endian length and the bytes; a message over
 * 0x7fffffff bytes is 0xffffffff, an 8-byte big-endian length, and the
 * bytes (Python 3.8+; Python reads the first word as signed, so lengths
 * 0x80000000-0xfffffffe never occur and are refused here as garbage).
 *
 * Why in libmpq and not in libmpq-net: a Connection must stay one type,
 * struct mpq_conn, so that the mpq_conn_* calls and mpq_wait() take it
 * whatever carries it, and that type's layout is libmpq's. This file
 * knows nothing of addresses, sockets being made or authentication: it
 * reads and writes an fd it is given (as Python's Connection(fd) does).
 * Making, naming and authenticating sockets is libmpq-net's (net/), which
 * is where getaddrinfo() and libcrypto are linked.
 *
 * The peer is not trusted. A length is never allocated up front: a
 * receive into the caller's buffer refuses a message larger than it
 * (-EMSGSIZE, the message stays, as with a pipe), and mpq_conn_recv_bytes()
 * grows its buffer as bytes arrive, so memory follows what was sent, not
 * what was claimed. A header that cannot be Python's is -EPROTO, and from
 * then on every receive: the stream has lost its framing. Every wait is
 * bounded by the caller's timeout.
 *
 * Timeouts keep the pipe's promises as far as a socket lets them: a
 * receive that times out mid-message keeps what it took for the next
 * receive; a send that times out before any byte left withdraws the
 * message whole, but one that times out part-way has cut the stream: the
 * sending side is shut (shutdown(SHUT_WR)), later sends are -EPIPE, and
 * the peer gets -ECONNABORTED (Python: EOFError) for the cut message. The
 * kernel's socket buffer is the ring here, and unlike the ring its free
 * room cannot be reserved first, so any message can be cut this way.
 */
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* The first allocation of a message of unknown honesty; it then doubles. */
#define STREAM_GROW_MIN		(64 * 1024)
#define STREAM_SMALL_LEN	0x7fffffffULL

struct mpq_stream {
	int fd;
	int tx_shut;		/* a send was cut: nothing may follow it */
	int rx_err;		/* sticky: -EPROTO once the framing is lost */
	/* The message being received, between calls too. */
	unsigned int hdr_got;
	unsigned char hdr[12];
	int have_total;		/* the header is read: total is known */
	int skip;		/* its bytes so far were lost (-ENOMEM) */
	uint64_t total, off;
	unsigned char *part;	/* bytes [0, off) of it, if a call left it */
	size_t part_cap;
};

/* Wait for events on the fd until the deadline: 0, -EAGAIN, -ETIMEDOUT. */
static int stream_wait(struct mpq_stream *s, short events, int64_t deadline,
		       int nowait)
{
	struct pollfd p = { .fd = s->fd, .events = events };
	struct timespec ts, *tsp = NULL;
	int64_t left;
	int n;

	for (;;) {
		if (deadline >= 0) {
			left = deadline - mpq_now_ns();
			if (left < 0)
				left = 0;	/* one last look, then give up */
			ts.tv_sec = left / 1000000000;
			ts.tv_nsec = left % 1000000000;
			tsp = &ts;
		}
		n = ppoll(&p, 1, tsp, NULL);
		if (n > 0)
			return 0;	/* ready, or an error the call will see */
		if (n < 0 && errno != EINTR)
			return -errno;
		if (deadline >= 0 && mpq_now_ns() >= deadline)
			return nowait ? -EAGAIN : -ETIMEDOUT;
	}
}

int mpq__stream_open(struct mpq_stream **out, int fd)
{
	struct mpq_stream *s;
	socklen_t sl = sizeof(int);
	int type;

	if (fd < 0)
		return -EBADF;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl))
		return -errno;		/* -ENOTSOCK: not a socket */
	if (type != SOCK_STREAM)
		return -EPROTOTYPE;	/* messages need a byte stream here */
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = fd;
	*out = s;
	return 0;
}

int mpq__stream_fd(struct mpq_stream *s)
{
	return s->fd;
}

void mpq__stream_close(struct mpq_stream *s)
{
	if (!s)
		return;
	close(s->fd);
	free(s->part);
	free(s);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint64_t get_be(const unsigned char *p, int n)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

int mpq__stream_send(struct mpq_stream *s, const void *buf, size_t len,
		    int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	unsigned char hdr[12];
	struct iovec iov[2];
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
	uint64_t sent = 0;
	ssize_t n;
	int ret;

	if (!buf && len)
		return -EINVAL;
	if (s->tx_shut)
		return -EPIPE;
	if (len > STREAM_SMALL_LEN) {
		put_be32(hdr, 0xffffffffU);
		put_be32(hdr + 4, (uint32_t)((uint64_t)len >> 32));
		put_be32(hdr + 8, (uint32_t)len);
		iov[0].iov_len = 12;
	} else {
		put_be32(hdr, (uint32_t)len);
		iov[0].iov_len = 4;
	}
	/* One call for header and body: no Nagle stall between them. */
	iov[0].iov_base = hdr;
	iov[1].iov_base = (void *)buf;
	iov[1].iov_len = len;
	for (;;) {
		/* Without a deadline, block in the kernel: see stream_read(). */
		n = sendmsg(s->fd, &m, MSG_NOSIGNAL |
			    (deadline < 0 ? 0 : MSG_DONTWAIT));
		if (n > 0) {
			sent += (uint64_t)n;
			while (m.msg_iovlen && (size_t)n >= m.msg_iov->iov_len) {
				n -= (ssize_t)m.msg_iov->iov_len;
				m.msg_iov++;
				m.msg_iovlen--;
			}
			if (!m.msg_iovlen)
				return 0;
			m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + n;
			m.msg_iov->iov_len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			ret = stream_wait(s, POLLOUT, deadline, timeout_ns == 0);
			if (!ret)
				continue;
		} else {
			ret = n < 0 && errno != EPIPE && errno != ECONNRESET ?
			      -errno : -EPIPE;
		}
		if (!sent)
			return ret;	/* nothing of it left: withdrawn */
		/* Cut part-way: the rest can never follow. See the top. */
		shutdown(s->fd, SHUT_WR);
		s->tx_shut = 1;
		return ret == -EAGAIN ? -ETIMEDOUT : ret;
	}
}

/* Forget the message being received. */
static void stream_rx_reset(struct mpq_stream *s)
{
	free(s->part);
	s->part = NULL;
	s->part_cap = 0;
	s->hdr_got = 0;
	s->have_total = 0;
	s->skip = 0;
	s->total = s->off = 0;
}

/*
 * One recv() into p: the count, or 0 (end of file), or -errno (-EAGAIN:
 * nothing now). A reset by the peer is its end of file. Without a
 * deadline it blocks in the kernel: one system call per wait instead of
 * recv, ppoll, recv (a blocking socket of the user's may still say
 * -EAGAIN: then the caller polls as it would anyway).
 */
static ssize_t stream_read(struct mpq_stream *s, void *p, size_t n,
			   int64_t deadline)
{
	ssize_t r;

	do {
		r = recv(s->fd, p, n, deadline < 0 ? 0 : MSG_DONTWAIT);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == ECONNRESET ? 0 : -errno;
	return r;
}

/* Read the rest of the header; 0, or what a receive returns. */
static int stream_header(struct mpq_stream *s, int64_t deadline, int nowait)
{
	uint64_t v;
	ssize_t r;
	unsigned int need;
	int ret;

	for (;;) {
		need = s->hdr_got >= 4 && get_be(s->hdr, 4) == 0xffffffffU ?
		       12 : 4;
		if (s->hdr_got == need)
			break;
		r = stream_read(s, s->hdr + s->hdr_got, need - s->hdr_got,
				deadline);
		if (r > 0) {
			s->hdr_got += (unsigned int)r;
			continue;
		}
		if (r == 0) {
			/* Between messages: the end. Inside a header: cut. */
			ret = s->hdr_got ? -ECONNABORTED : -EPIPE;
			s->hdr_got = 0;
			return ret;
		}
		if (r != -EAGAIN)
			return (int)r;
		ret = stream_wait(s, POLLIN, deadline, nowait);
		if (ret)
			return ret;
	}
	v = get_be(s->hdr, 4);
	if (v == 0xffffffffU) {
		v = get_be(s->hdr + 4, 8);
		/* Python never sends more than a signed 64-bit count. */
		if (v > (uint64_t)SSIZE_MAX)
			return s->rx_err = -EPROTO;
	} else if (v > STREAM_SMALL_LEN) {
		return s->rx_err = -EPROTO;
	}
	s->total = v;
	s->have_total = 1;
	return 0;
}

/* Discard the rest of a message whose first part was lost. */
static int stream_skip(struct mpq_stream *s, int64_t deadline, int nowait)
{
	unsigned char junk[4096];
	uint64_t want;
	ssize_t r;
	int ret;

	while (s->off < s->total) {
		want = s->total - s->off;
		r = stream_read(s, junk, want < sizeof(junk) ? want : sizeof(junk),
				deadline);
		if (r > 0) {
			s->off += (uint64_t)r;
			continue;
		}
		if (r == 0) {
			stream_rx_reset(s);
			return -EPIPE;	/* its -ENOMEM was its report */
		}
		if (r != -EAGAIN)
			return (int)r;
		ret = stream_wait(s, POLLIN, deadline, nowait);
		if (ret)
			return ret;
	}
	stream_rx_reset(s);
	return 0;
}

/*
 * Receive one message: into buf of *len bytes, or (alloc) into a buffer
 * of ours of at most *len bytes handed out through *(void **)buf.
 */
int mpq__stream_recv(struct mpq_stream *s, void *buf, size_t *len,
		    int64_t timeout_ns, int alloc)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	int nowait = timeout_ns == 0;
	unsigned char *dst;
	size_t cap;
	ssize_t r;
	int ret;

	if (!len || !buf)
		return -EINVAL;
	if (s->rx_err)
		return s->rx_err;
again:
	if (!s->have_total) {
		ret = stream_header(s, deadline, nowait);
		if (ret)
			return ret;
	}
	if (s->skip) {
		ret = stream_skip(s, deadline, nowait);
		if (ret)
			return ret;
		goto again;
	}
	if (s->total > *len) {
		*len = s->total;	/* it stays for a bigger buffer */
		return -EMSGSIZE;
	}
	/* Where the bytes go: what a timed-out call kept comes first. */
	if (alloc) {
		dst = s->part;
		cap = s->part_cap;
		s->part = NULL;
	} else {
		dst = buf;
		cap = s->total;
		if (s->part)
			memcpy(dst, s->part, s->off);
		free(s->part);
		s->part = NULL;
	}
	ret = 0;
	while (s->off < s->total) {
		if (s->off == cap) {
			/* Grow with what came, never to what was claimed. */
			size_t want = cap < STREAM_GROW_MIN / 2 ?
				      STREAM_GROW_MIN : cap * 2;
			unsigned char *p;

			if (want > s->total)
				want = s->total;
			p = realloc(dst, want);
			if (!p) {
				ret = -ENOMEM;	/* kept: a later call goes on */
				break;
			}
			dst = p;
			cap = want;
		}
		r = stream_read(s, dst + s->off, cap - s->off, deadline);
		if (r > 0) {
			s->off += (uint64_t)r;
			continue;
		}
		if (r == 0) {
			/* The peer went in the middle: cut, never delivered. */
			if (alloc)
				free(dst);
			stream_rx_reset(s);
			return -ECONNABORTED;
		}
		ret = r == -EAGAIN ? stream_wait(s, POLLIN, deadline, nowait) :
				     (int)r;
		if (ret)
			break;
	}
	if (ret) {
		/* Part-way: keep what was taken for the next receive. */
		if (alloc) {
			s->part = dst;
			s->part_cap = cap;
		} else if (s->off) {
			s->part = malloc(s->off);
			s->part_cap = s->off;
			if (!s->part) {
				s->skip = 1;	/* lost: the next call skips it */
				return -ENOMEM;
			}
			memcpy(s->part, dst, s->off);
		}
		return ret;
	}
	if (alloc) {
		if (!dst)
			dst = malloc(1);	/* an empty message */
		if (!dst)
			return -ENOMEM;
		*(void **)buf = dst;
	}
	*len = s->total;
	s->part = NULL;
	stream_rx_reset(s);
	return 0;
}

/* Anything to receive (a message, the end of file, an error) by then? */
int mpq__stream_poll(struct mpq_stream *s, int64_t timeout_ns)
{
	int ret;

	if (s->rx_err)
		return 1;
	ret = stream_wait(s, POLLIN, mpq_deadline(timeout_ns), 0);
	if (ret == -ETIMEDOUT)
		return 0;
	return ret ? ret : 1;
}

int mpq__stream_wait_prepare(struct mpq_stream *s, struct pollfd *p, int *np)
{
	struct pollfd q = { .fd = s->fd, .events = POLLIN };

	*np = 0;
	if (s->rx_err || poll(&q, 1, 0) > 0)
		return 1;
	p[0] = q;
	*np = 1;
	return 0;
}
