/* SPDX-License-Identifier: MIT */
/*
 * libmpq-net: the parts of mpq that talk over a network, kept out of
 * libmpq so that a program using only local objects links no socket,
 * crypto or Redis code and opens no connection.
 *
 *   Listener and Client   multiprocessing.connection's, in Python's own
 *                         wire format and authentication handshake;
 *   Managers              shared objects in a server process (Redis),
 *                         reached from other processes and machines.
 *
 * Link with `pkg-config --libs mpq-net` (it pulls in libmpq). Calls follow
 * libmpq's conventions (mpq.h): 0 or a count on success, a negative errno
 * on failure, timeouts in int64_t nanoseconds.
 */
#ifndef MPQ_NET_H
#define MPQ_NET_H

#include <mpq.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of libmpq-net, "MAJOR.MINOR.PATCH"; never NULL. */
const char *mpq_net_version(void);

/*
 * Listener and Client: multiprocessing.connection's, for processes that
 * are not related, on this machine (AF_UNIX, a path or an abstract name)
 * or across machines (TCP). They speak Python's wire format and
 * authentication handshake, so either end may be Python's
 * multiprocessing.connection. What they give is an ordinary struct
 * mpq_conn (mpq_conn_from_fd() in <mpq.h>): send_bytes, recv_bytes_into,
 * poll, fileno and mpq_wait() as for a pipe. See mpq_listener(3).
 *
 * Addresses: "/path" or any string with a '/' (AF_UNIX path; a bare name
 * without ':port' is one too), "@name" (abstract; Python's "\0name"),
 * "host:port" or "[v6]:port" (TCP; ":port" listens on every interface,
 * port 0 on a free one). A listener's NULL address is an abstract name
 * the kernel picks.
 *
 * authkey: NULL for no authentication (Python's authkey=None); else both
 * ends must hold the same bytes. The handshake is Python's HMAC challenge
 * both ways; mpq sends 3.12's "{sha256}" challenge and answers 3.11's
 * (HMAC-MD5) and 3.12's (any digest it names) alike. A wrong key is
 * -EACCES on both ends (Python's AuthenticationError); a peer that does
 * not speak the handshake, -EPROTO.
 */
struct mpq_listener;

/* Zero-initialise; zero means the default; reserved fields must be 0. */
struct mpq_listener_attr {
	int32_t backlog;		/* listen(2)'s: 0 is SOMAXCONN */
	uint32_t flags;			/* none yet: must be 0 */
	int64_t handshake_timeout_ns;	/* bound on one accepted peer's
					   handshake: 0 is 20 s, < 0 none */
	uint64_t __reserved[4];
};

/*
 * Bind address and listen. An AF_UNIX path must not exist (as in Python);
 * it is unlinked by mpq_listener_close() in the process that bound it.
 * Returns 0, -EINVAL, -ENAMETOOLONG, -EADDRINUSE, -EACCES, -EHOSTUNREACH
 * (host not resolved), -EADDRNOTAVAIL, -ENOMEM, -EMFILE.
 */
int mpq_listener_new(struct mpq_listener **out, const char *address,
		     const void *authkey, size_t authkey_len,
		     const struct mpq_listener_attr *attr);

/*
 * Accept one connection and, with a key, run the handshake, all within
 * timeout_ns (and the handshake within the attr's bound too). A peer that
 * fails the handshake is dropped and its error returned; the listener
 * goes on. Returns 0, -EAGAIN (timeout 0, nobody waiting), -ETIMEDOUT,
 * -EACCES (wrong key), -EPROTO (not Python's handshake, or garbage), -EPIPE
 * (the peer left mid-handshake), -EBADF, -EINVAL, -ENOMEM, -EMFILE.
 */
int mpq_listener_accept(struct mpq_listener *l, struct mpq_conn **out,
			int64_t timeout_ns);

/* The address bound (as above, numeric); its length, or -ERANGE, -EBADF. */
int mpq_listener_address(struct mpq_listener *l, char *buf, size_t len);

/* The listening socket, readable when a peer is waiting to be accepted. */
int mpq_listener_fileno(struct mpq_listener *l);

/* Stop listening (unlinking its path); later calls: -EBADF. */
int mpq_listener_close(struct mpq_listener *l);
void mpq_listener_free(struct mpq_listener *l);

/*
 * Connect to address and, with a key, run the handshake, all within
 * timeout_ns (Python's Client has none: pass MPQ_FOREVER for that).
 * Returns 0, -ECONNREFUSED, -ENOENT (no such path), -ETIMEDOUT, -EACCES,
 * -EPROTO, -EPIPE, -EHOSTUNREACH, -EINVAL, -ENAMETOOLONG, -ENOMEM.
 */
int mpq_client(struct mpq_conn **out, const char *address,
	       const void *authkey, size_t authkey_len, int64_t timeout_ns);

/*
 * The two halves of the handshake, over any connection (Python's
 * deliver_challenge and answer_challenge): the deliverer checks that the
 * answerer holds the key. Returns 0, -EACCES, -EPROTO, -ETIMEDOUT,
 * -EPIPE, -EINVAL, and the connection's errors.
 */
int mpq_deliver_challenge(struct mpq_conn *c, const void *authkey,
			  size_t authkey_len, int64_t timeout_ns);
int mpq_answer_challenge(struct mpq_conn *c, const void *authkey,
			 size_t authkey_len, int64_t timeout_ns);

#ifdef __cplusplus
}
#endif

#endif /* MPQ_NET_H */
