// SPDX-License-Identifier: MIT
/*
 * The authentication handshake of Python's multiprocessing.connection:
 * deliver_challenge() on one side, answer_challenge() on the other; a
 * Listener delivers then answers, a Client answers then delivers, so
 * each side proves to the other that it holds the key.
 *
 *   deliverer -> "#CHALLENGE#" + message
 *   answerer  -> HMAC(key, message), as below
 *   deliverer -> "#WELCOME#" or "#FAILURE#"
 *
 * Two dialects, told apart by lengths (CPython 3.12's scheme):
 *  - Python <= 3.11: message is 20 random bytes; the answer is the raw
 *    16-byte HMAC-MD5 of it.
 *  - Python >= 3.12: message is "{sha256}" and 40 random bytes; the answer
 *    is "{name}" and the HMAC with that digest of the whole message,
 *    prefix included (so a peer cannot be talked down to a weaker one).
 *    A 3.12 deliverer still takes a raw 16-byte MD5 answer, which is what
 *    a 3.11 answerer gives to a challenge it does not understand.
 *
 * mpq answers in the dialect it is asked in, and delivers the 3.12 one
 * ("{sha256}"): a 3.12+ peer then answers with HMAC-SHA256, and a 3.11
 * peer with its HMAC-MD5 of the same bytes, which is accepted as 3.12
 * accepts it. So mpq talks to both, and never weaker than its peer can do.
 * The key never crosses the wire either way; MD5 stays only because
 * Python 3.11 knows nothing else.
 *
 * The MACs are OpenSSL's (libcrypto), compared in constant time; the
 * random bytes are the kernel's (getrandom). Every receive takes at most
 * 256 bytes, as Python's do, so a hostile peer cannot make us allocate.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "net.h"

#define AUTH_CHALLENGE		"#CHALLENGE#"
#define AUTH_WELCOME		"#WELCOME#"
#define AUTH_FAILURE		"#FAILURE#"
#define AUTH_MSG_LEN		40	/* random bytes we send (3.12's) */
#define AUTH_MD5ONLY_LEN	20	/* a 3.11 challenge's random bytes */
#define AUTH_MD5_LEN		16	/* a 3.11 answer: raw HMAC-MD5 */
#define AUTH_MAX_RECV		256	/* Python's recv_bytes(256) */
#define AUTH_DIGEST		"sha256"

/* The digests a 3.12+ peer may name, and OpenSSL's for each. */
static const EVP_MD *auth_md(const char *name, size_t len)
{
	static const struct {
		const char *name;
		const EVP_MD *(*md)(void);
	} mds[] = {
		{ "md5", EVP_md5 },
		{ "sha256", EVP_sha256 },
		{ "sha384", EVP_sha384 },
		{ "sha3_256", EVP_sha3_256 },
		{ "sha3_384", EVP_sha3_384 },
	};
	unsigned int i;

	for (i = 0; i < sizeof(mds) / sizeof(mds[0]); i++)
		if (strlen(mds[i].name) == len && !memcmp(mds[i].name, name, len))
			return mds[i].md();
	return NULL;
}

/*
 * A challenge or an answer: which digest, and where its payload starts.
 * The 3.11 lengths mean MD5 without a prefix; anything else must start
 * with "{name}" naming a digest above. 0 or -EPROTO.
 */
static int auth_parse(const unsigned char *m, size_t len, const EVP_MD **md,
		      size_t *payload)
{
	const unsigned char *curly;

	if (len == AUTH_MD5ONLY_LEN || len == AUTH_MD5_LEN) {
		*md = EVP_md5();
		*payload = 0;
		return 0;
	}
	/* Python looks for '}' within the longest name ("sha3_384") + 2. */
	if (len < 2 || m[0] != '{')
		return -EPROTO;
	curly = memchr(m + 1, '}', len - 1 < 9 ? len - 1 : 9);
	if (!curly)
		return -EPROTO;
	*md = auth_md((const char *)m + 1, (size_t)(curly - m - 1));
	*payload = (size_t)(curly - m) + 1;
	return *md ? 0 : -EPROTO;
}

/* HMAC(key, data) with md into out (EVP_MAX_MD_SIZE); its length or < 0. */
static int auth_mac(const EVP_MD *md, const void *key, size_t keylen,
		    const unsigned char *data, size_t len, unsigned char *out)
{
	static const unsigned char empty;
	unsigned int n = 0;

	if (keylen > INT32_MAX)
		return -EINVAL;
	/* OpenSSL wants a non-NULL key even when it is empty. */
	if (!HMAC(md, keylen ? key : &empty, (int)keylen, data, len, out, &n))
		return -EOPNOTSUPP;	/* e.g. MD5 refused in FIPS mode */
	return (int)n;
}

/* Receive one message of at most AUTH_MAX_RECV bytes: its length or < 0. */
static int auth_recv(struct mpq_conn *c, unsigned char *buf, int64_t deadline)
{
	size_t len = AUTH_MAX_RECV;
	int ret;

	ret = mpq_conn_recv_bytes_into(c, buf, &len, mpq_net_left(deadline));
	if (ret == -EMSGSIZE)
		return -EPROTO;		/* not a handshake message */
	if (ret == -EAGAIN)
		return -ETIMEDOUT;
	return ret ? ret : (int)len;
}

static int auth_send(struct mpq_conn *c, const void *buf, size_t len,
		     int64_t deadline)
{
	int ret = mpq_conn_send_bytes(c, buf, len, mpq_net_left(deadline));

	return ret == -EAGAIN ? -ETIMEDOUT : ret;
}

MPQ_NET_EXPORT int mpq_deliver_challenge(struct mpq_conn *c, const void *key,
					 size_t keylen, int64_t timeout_ns)
{
	int64_t deadline = mpq_net_deadline(timeout_ns);
	unsigned char msg[sizeof(AUTH_CHALLENGE) + 16 + AUTH_MSG_LEN];
	unsigned char resp[AUTH_MAX_RECV], want[EVP_MAX_MD_SIZE];
	size_t hl = sizeof(AUTH_CHALLENGE) - 1, pl, off;
	const EVP_MD *md;
	int n, m, ret, ok;

	if (!c || (!key && keylen))
		return -EINVAL;
	memcpy(msg, AUTH_CHALLENGE, hl);
	pl = (size_t)sprintf((char *)msg + hl, "{%s}", AUTH_DIGEST);
	if (getrandom(msg + hl + pl, AUTH_MSG_LEN, 0) != AUTH_MSG_LEN)
		return -EIO;
	pl += AUTH_MSG_LEN;		/* the message: prefix and random */
	ret = auth_send(c, msg, hl + pl, deadline);
	if (ret)
		return ret;
	n = auth_recv(c, resp, deadline);
	if (n < 0)
		return n;
	/* An answer we cannot read is a wrong one, as Python has it. */
	ok = !auth_parse(resp, (size_t)n, &md, &off);
	if (ok) {
		m = auth_mac(md, key, keylen, msg + hl, pl, want);
		ok = m > 0 && (size_t)m == (size_t)n - off &&
		     !CRYPTO_memcmp(want, resp + off, (size_t)m);
	}
	if (!ok) {
		auth_send(c, AUTH_FAILURE, sizeof(AUTH_FAILURE) - 1, deadline);
		return -EACCES;
	}
	return auth_send(c, AUTH_WELCOME, sizeof(AUTH_WELCOME) - 1, deadline);
}

MPQ_NET_EXPORT int mpq_answer_challenge(struct mpq_conn *c, const void *key,
					size_t keylen, int64_t timeout_ns)
{
	int64_t deadline = mpq_net_deadline(timeout_ns);
	unsigned char msg[AUTH_MAX_RECV], resp[16 + EVP_MAX_MD_SIZE];
	size_t hl = sizeof(AUTH_CHALLENGE) - 1, off, rl = 0;
	const EVP_MD *md;
	int n, m, ret;

	if (!c || (!key && keylen))
		return -EINVAL;
	n = auth_recv(c, msg, deadline);
	if (n < 0)
		return n;
	if ((size_t)n < hl || memcmp(msg, AUTH_CHALLENGE, hl))
		return -EPROTO;		/* not a challenge */
	if ((size_t)n - hl < AUTH_MD5ONLY_LEN)
		return -EPROTO;		/* too short to be one (3.12 refuses) */
	ret = auth_parse(msg + hl, (size_t)n - hl, &md, &off);
	if (ret)
		return ret;
	if (off) {
		/* 3.12's form: "{name}" then the MAC of all the message. */
		memcpy(resp, msg + hl, off);
		rl = off;
	}
	m = auth_mac(md, key, keylen, msg + hl, (size_t)n - hl, resp + rl);
	if (m < 0)
		return m;
	ret = auth_send(c, resp, rl + (size_t)m, deadline);
	if (ret)
		return ret;
	n = auth_recv(c, msg, deadline);
	if (n < 0)
		return n;
	if ((size_t)n != sizeof(AUTH_WELCOME) - 1 ||
	    memcmp(msg, AUTH_WELCOME, (size_t)n))
		return -EACCES;		/* our answer was refused */
	return 0;
}
