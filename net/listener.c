// SPDX-License-Identifier: MIT
/*
 * Listener and Client: multiprocessing.connection's, for C, able to talk
 * to Python's. A listener binds an address and accepts connections; a
 * client connects to one; both give a struct mpq_conn in Python's framing
 * (mpq_conn_from_fd(), lib/conn_stream.c), after the authentication
 * handshake (auth.c) when there is a key.
 *
 * Addresses are strings, as Python's are strings or (host, port) tuples:
 *   "/path/sock", "./sock", "sock"   AF_UNIX, a path in the file system
 *   "@name"                          AF_UNIX, Linux's abstract namespace
 *                                    (Python's '\0name')
 *   "host:port", "[v6addr]:port"     TCP (AF_INET, or AF_INET6), by
 *                                    getaddrinfo(); ":port" is every
 *                                    interface; port 0 picks a free one
 *   NULL (listener only)             an abstract name the kernel picks
 *                                    (Python's arbitrary_address)
 * A string with a '/' is always a path; one ending in ":digits" otherwise
 * is TCP. mpq_listener_address() says what was bound, in the same form.
 *
 * Why a library of its own: libmpq stays free of getaddrinfo, sockets
 * being made, and libcrypto (see include/mpq_net.h); a program that only
 * forks workers links none of it. The seam is one call: libmpq turns a
 * connected socket into a Connection, whoever made it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net.h"

/* A listener's default bound on one connection's handshake (Python: none). */
#define LISTENER_HANDSHAKE_NS	(20LL * 1000000000)

struct mpq_listener {
	int fd;
	int family;
	pid_t owner;			/* unlinks a path it bound, at close */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	unsigned char *key;
	size_t keylen;
	int has_key;
	int64_t handshake_ns;
};

/* A parsed address: an AF_UNIX one, or a host and port to resolve. */
struct net_addr {
	int family;			/* AF_UNIX, or AF_UNSPEC for TCP */
	struct sockaddr_un un;
	socklen_t unlen;
	char host[256];
	char port[8];
};

static int addr_parse(const char *s, struct net_addr *a, int listener)
{
	const char *colon;
	size_t len, i;

	memset(a, 0, sizeof(*a));
	a->un.sun_family = AF_UNIX;
	if (!s || !*s) {
		if (!listener)
			return -EINVAL;
		/* Autobind: the kernel picks an abstract name (unix(7)). */
		a->family = AF_UNIX;
		a->unlen = sizeof(sa_family_t);
		return 0;
	}
	len = strlen(s);
	colon = strrchr(s, ':');
	if (*s != '@' && !strchr(s, '/') && colon && colon[1] &&
	    strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
		i = (size_t)(colon - s);
		if (strlen(colon + 1) >= sizeof(a->port) ||
		    i >= sizeof(a->host))
			return -EINVAL;
		memcpy(a->host, s, i);
		/* "[::1]:port": the brackets are not part of the host. */
		if (i >= 2 && a->host[0] == '[' && a->host[i - 1] == ']') {
			memmove(a->host, a->host + 1, i - 2);
			a->host[i - 2] = 0;
		}
		strcpy(a->port, colon + 1);
		if (atol(a->port) > 65535)
			return -EINVAL;
		a->family = AF_UNSPEC;
		return 0;
	}
	a->family = AF_UNIX;
	if (len > sizeof(a->un.sun_path) - (*s == '@' ? 0 : 1))
		return -ENAMETOOLONG;
	memcpy(a->un.sun_path, s, len);
	if (*s == '@') {
		/* Abstract: a NUL, then exactly the name (no terminator). */
		a->un.sun_path[0] = 0;
		a->unlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	} else {
		a->unlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	}
	return 0;
}

static int addr_resolve(struct net_addr *a, int listener, struct addrinfo **res)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = listener ? AI_PASSIVE : 0,
	};
	int ret;

	ret = getaddrinfo(a->host[0] ? a->host : NULL, a->port, &hints, res);
	switch (ret) {
	case 0:
		return 0;
	case EAI_SYSTEM:
		return -errno;
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_AGAIN:
		return -EAGAIN;
	default:
		return -EHOSTUNREACH;	/* no such host (EAI_NONAME ...) */
	}
}

/* Latency over throughput: one message is one write already. */
static void sock_tune(int fd, int family)
{
	int one = 1;

	if (family == AF_INET || family == AF_INET6)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Make a connected socket a Connection and run the handshake, if keyed. */
static int conn_finish(int fd, struct mpq_conn **out, const void *key,
		       size_t keylen, int has_key, int listener,
		       int64_t deadline)
{
	struct mpq_conn *c;
	int ret;

	ret = mpq_conn_from_fd(&c, fd, 0);
	if (ret) {
		close(fd);
		return ret;
	}
	if (has_key) {
		/* Python's order: a Listener delivers first, a Client answers. */
		if (listener) {
			ret = mpq_deliver_challenge(c, key, keylen, mpq_net_left(deadline));
			if (!ret)
				ret = mpq_answer_challenge(c, key, keylen,
							   mpq_net_left(deadline));
		} else {
			ret = mpq_answer_challenge(c, key, keylen, mpq_net_left(deadline));
			if (!ret)
				ret = mpq_deliver_challenge(c, key, keylen,
							    mpq_net_left(deadline));
		}
		if (ret) {
			mpq_conn_free(c);
			return ret;
		}
	}
	*out = c;
	return 0;
}

MPQ_NET_EXPORT int mpq_listener_new(struct mpq_listener **out,
				    const char *address, const void *authkey,
				    size_t authkey_len,
				    const struct mpq_listener_attr *attr)
{
	static const struct mpq_listener_attr defaults;
	struct addrinfo *res = NULL, *ai;
	struct mpq_listener *l;
	struct net_addr a;
	int one = 1, ret, i, backlog;

	if (!out || (!authkey && authkey_len))
		return -EINVAL;
	if (!attr)
		attr = &defaults;
	if (attr->flags || attr->backlog < 0)
		return -EINVAL;
	for (i = 0; i < 4; i++)
		if (attr->__reserved[i])
			return -EINVAL;
	backlog = attr->backlog ? attr->backlog : SOMAXCONN;
	ret = addr_parse(address, &a, 1);
	if (ret)
		return ret;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->fd = -1;
	l->owner = getpid();
	l->handshake_ns = attr->handshake_timeout_ns ? attr->handshake_timeout_ns :
			  LISTENER_HANDSHAKE_NS;
	if (authkey) {
		l->has_key = 1;
		l->keylen = authkey_len;
		l->key = malloc(authkey_len ? authkey_len : 1);
		if (!l->key) {
			ret = -ENOMEM;
			goto err;
		}
		memcpy(l->key, authkey, authkey_len);
	}

	if (a.family == AF_UNIX) {
		l->family = AF_UNIX;
		l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&a.un, a.unlen)) {
			ret = -errno;
			goto err;
		}
		if (a.un.sun_path[0])
			strcpy(l->path, a.un.sun_path);
	} else {
		ret = addr_resolve(&a, 1, &res);
		if (ret)
			goto err;
		ret = -EADDRNOTAVAIL;
		for (ai = res; ai; ai = ai->ai_next) {
			l->fd = socket(ai->ai_family, ai->ai_socktype |
				       SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
			if (l->fd < 0) {
				ret = -errno;
				continue;
			}
			/* As Python's SocketListener does on POSIX. */
			setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (!bind(l->fd, ai->ai_addr, ai->ai_addrlen)) {
				l->family = ai->ai_family;
				break;
			}
			ret = -errno;
			close(l->fd);
			l->fd = -1;
		}
		freeaddrinfo(res);
		if (l->fd < 0)
			goto err;
	}
	if (listen(l->fd, backlog)) {
		ret = -errno;
		goto err;		/* a path we bound is unlinked there */
	}
	*out = l;
	return 0;
err:
	if (l->fd >= 0)
		close(l->fd);
	if (l->path[0])
		unlink(l->path);
	free(l->key);
	free(l);
	return ret;
}

MPQ_NET_EXPORT int mpq_listener_accept(struct mpq_listener *l,
				       struct mpq_conn **out,
				       int64_t timeout_ns)
{
	int64_t deadline = mpq_net_deadline(timeout_ns), hs;
	struct pollfd p;
	int fd, n;

	if (!l || !out)
		return -EINVAL;
	if (l->fd < 0)
		return -EBADF;
	for (;;) {
		fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno != EAGAIN)
			return -errno;
		p.fd = l->fd;
		p.events = POLLIN;
		if (deadline < 0) {
			n = poll(&p, 1, -1);
		} else {
			int64_t left = deadline - mpq_net_now_ns();

			if (left <= 0)
				return timeout_ns ? -ETIMEDOUT : -EAGAIN;
			/* poll()'s ms, rounded up: never wake early forever. */
			n = poll(&p, 1, (int)((left + 999999) / 1000000 > 86400000 ?
					      86400000 : (left + 999999) / 1000000));
		}
		if (n < 0 && errno != EINTR)
			return -errno;
	}
	sock_tune(fd, l->family);
	/*
	 * The handshake is bounded by the caller's deadline and by the
	 * listener's own: a peer that connects and says nothing must not hold
	 * up the accepts behind it for ever.
	 */
	if (l->has_key && l->handshake_ns > 0) {
		hs = mpq_net_deadline(l->handshake_ns);
		if (deadline < 0 || (hs >= 0 && hs < deadline))
			deadline = hs;
	}
	return conn_finish(fd, out, l->key, l->keylen, l->has_key, 1, deadline);
}

/* The bound address, "@name" for an abstract one (bytes that are not
 * printable as \xNN), a path, or "host:port" / "[v6]:port". */
MPQ_NET_EXPORT int mpq_listener_address(struct mpq_listener *l, char *buf,
					size_t len)
{
	struct sockaddr_storage ss;
	struct sockaddr_un *un = (struct sockaddr_un *)&ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], serv[NI_MAXSERV], tmp[4 * 108 + 2];
	size_t i, k = 0, nl;
	int n;

	if (!l || !buf)
		return -EINVAL;
	if (l->fd < 0)
		return -EBADF;
	if (getsockname(l->fd, (struct sockaddr *)&ss, &sl))
		return -errno;
	if (ss.ss_family == AF_UNIX) {
		nl = sl - offsetof(struct sockaddr_un, sun_path);
		if (nl && !un->sun_path[0]) {
			tmp[k++] = '@';
			for (i = 1; i < nl; i++) {
				unsigned char ch = (unsigned char)un->sun_path[i];

				if (ch >= 0x20 && ch < 0x7f)
					tmp[k++] = (char)ch;
				else
					k += (size_t)sprintf(tmp + k, "\\x%02x", ch);
			}
			tmp[k] = 0;
		} else {
			snprintf(tmp, sizeof(tmp), "%.*s", (int)strnlen(un->sun_path, nl),
				 un->sun_path);
		}
		n = snprintf(buf, len, "%s", tmp);
	} else {
		if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv,
				sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV))
			return -EINVAL;
		n = snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
			     host, serv);
	}
	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	return n;
}

MPQ_NET_EXPORT int mpq_listener_fileno(struct mpq_listener *l)
{
	if (!l)
		return -EINVAL;
	return l->fd < 0 ? -EBADF : l->fd;
}

MPQ_NET_EXPORT int mpq_listener_close(struct mpq_listener *l)
{
	if (!l)
		return -EINVAL;
	if (l->fd < 0)
		return -EBADF;
	close(l->fd);
	l->fd = -1;
	/* As Python's Listener: its path goes with it, in the process that made it. */
	if (l->path[0] && getpid() == l->owner)
		unlink(l->path);
	l->path[0] = 0;
	return 0;
}

MPQ_NET_EXPORT void mpq_listener_free(struct mpq_listener *l)
{
	if (!l)
		return;
	if (l->fd >= 0)
		mpq_listener_close(l);
	if (l->key)
		memset(l->key, 0, l->keylen);
	free(l->key);
	free(l);
}

/* Connect fd to addr by the deadline: 0 or -errno (-ETIMEDOUT). */
static int sock_connect(int fd, const struct sockaddr *addr, socklen_t len,
			int64_t deadline, int unix_sock)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t sl = sizeof(int);
	int err = 0, n, ms;

	for (;;) {
		if (!connect(fd, addr, len))
			return 0;
		if (errno == EINTR)
			continue;
		/* AF_UNIX: a full backlog; try again until the deadline. */
		if (errno == EAGAIN && unix_sock) {
			if (deadline >= 0 && mpq_net_now_ns() >= deadline)
				return -ETIMEDOUT;
			usleep(1000);
			continue;
		}
		if (errno != EINPROGRESS)
			return -errno;
		break;
	}
	for (;;) {
		ms = -1;
		if (deadline >= 0) {
			int64_t left = deadline - mpq_net_now_ns();

			if (left <= 0)
				return -ETIMEDOUT;
			ms = (int)((left + 999999) / 1000000 > 86400000 ? 86400000 :
				   (left + 999999) / 1000000);
		}
		n = poll(&p, 1, ms);
		if (n > 0)
			break;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl))
		return -errno;
	return -err;
}

/* A blocking socket for the user's own use of fileno(); we never block. */
static void sock_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

MPQ_NET_EXPORT int mpq_client(struct mpq_conn **out, const char *address,
			      const void *authkey, size_t authkey_len,
			      int64_t timeout_ns)
{
	int64_t deadline = mpq_net_deadline(timeout_ns);
	struct addrinfo *res = NULL, *ai;
	struct net_addr a;
	int fd = -1, ret, family = AF_UNIX;

	if (!out || (!authkey && authkey_len))
		return -EINVAL;
	ret = addr_parse(address, &a, 0);
	if (ret)
		return ret;
	if (a.family == AF_UNIX) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -errno;
		ret = sock_connect(fd, (struct sockaddr *)&a.un, a.unlen, deadline, 1);
	} else {
		ret = addr_resolve(&a, 0, &res);
		if (ret)
			return ret;
		ret = -EHOSTUNREACH;
		for (ai = res; ai; ai = ai->ai_next) {
			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
				    SOCK_NONBLOCK, ai->ai_protocol);
			if (fd < 0) {
				ret = -errno;
				continue;
			}
			ret = sock_connect(fd, ai->ai_addr, ai->ai_addrlen, deadline, 0);
			if (!ret) {
				family = ai->ai_family;
				break;
			}
			close(fd);
			fd = -1;
			if (ret == -ETIMEDOUT)
				break;
		}
		freeaddrinfo(res);
	}
	if (ret) {
		if (fd >= 0)
			close(fd);
		return ret;
	}
	sock_blocking(fd);
	sock_tune(fd, family);
	return conn_finish(fd, out, authkey, authkey_len, authkey != NULL, 0,
			   deadline);
}
