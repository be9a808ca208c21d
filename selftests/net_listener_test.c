// SPDX-License-Identifier: GPL-2.0
/*
 * Listener and Client (libmpq-net) and the Connection over a socket
 * (mpq_conn_from_fd): Python's multiprocessing.connection promises, kept
 * against the real python3 of the machine (net_listener_peer.py beside
 * this file), in both directions, on a path, an abstract name and TCP
 * loopback; and what a hostile peer gets.
 */
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/un.h>

#include <openssl/sha.h>

#include "kselftest_harness.h"
#include "helpers.h"
#include "mpq_net.h"

#define PY		"/usr/bin/python3"
#define KEY		"\x01secret key\xff"
#define KEYHEX		"01736563726574206b6579ff"
#define WRONGHEX	"01736563726574206b6579fe"
#define TMO		(20 * NSEC_PER_SEC)

/* The peer script: beside this file, found from the binary upwards. */
static const char *peer_script(void)
{
	static char path[PATH_MAX];
	char exe[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	int up;

	if (n <= 0)
		return "selftests/net_listener_peer.py";
	exe[n] = 0;
	for (up = 0; up < 5 && (slash = strrchr(exe, '/')); up++) {
		*slash = 0;
		if (snprintf(path, sizeof(path), "%.3800s/selftests/net_listener_peer.py", exe) < 0)
			break;
		if (!access(path, R_OK))
			return path;
	}
	return "selftests/net_listener_peer.py";
}

struct py {
	pid_t pid;
	FILE *out;		/* its stdout: a listener's address line */
};

/* Start the Python peer: mode "listen" or "connect". */
static int py_start(struct py *p, const char *mode, const char *addr,
		    const char *keyhex, const char *dialect)
{
	int fds[2];

	if (pipe(fds))
		return -errno;
	p->pid = fork();
	if (p->pid < 0)
		return -errno;
	if (!p->pid) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execl(PY, PY, peer_script(), mode, addr, keyhex, "--dialect",
		      dialect ? dialect : "311", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	p->out = fdopen(fds[0], "r");
	return 0;
}

/* A Python listener's address, from its first line. */
static int py_address(struct py *p, char *buf, size_t len)
{
	if (!fgets(buf, (int)len, p->out))
		return -EIO;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

/* Its exit status (0, 3 AuthenticationError, 4 EOFError), or -1. */
static int py_wait(struct py *p)
{
	int st, i;

	for (i = 0; i < 6000; i++) {
		if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
			fclose(p->out);
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		}
		sleep_ms(10);
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &st, 0);
	fclose(p->out);
	return -1;
}

static void fill(unsigned char *b, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (unsigned char)(i * 31 + seed);
}

/*
 * One round with the Python peer: send msg, get back its length and
 * SHA-256, and compare. 0 or a negative errno / -EBADMSG.
 */
static int py_check_echo_tmo(struct mpq_conn *c, const void *msg, size_t len,
			     int64_t tmo)
{
	unsigned char reply[64], want[SHA256_DIGEST_LENGTH];
	size_t rl = sizeof(reply);
	uint64_t n = 0;
	int ret, i;

	ret = mpq_conn_send_bytes(c, msg, len, tmo);
	if (ret)
		return ret;
	ret = mpq_conn_recv_bytes_into(c, reply, &rl, tmo);
	if (ret)
		return ret;
	if (rl != 8 + SHA256_DIGEST_LENGTH)
		return -EBADMSG;
	for (i = 0; i < 8; i++)
		n = n << 8 | reply[i];
	SHA256(msg, len, want);
	return n == len && !memcmp(want, reply + 8, sizeof(want)) ? 0 : -EBADMSG;
}

static int py_check_echo(struct mpq_conn *c, const void *msg, size_t len)
{
	return py_check_echo_tmo(c, msg, len, TMO);
}

/* Ask the peer for n bytes of its pattern and check them. */
static int py_check_gen_tmo(struct mpq_conn *c, size_t n, int64_t tmo)
{
	char req[32];
	unsigned char *buf = NULL;
	ssize_t got;
	size_t i;

	snprintf(req, sizeof(req), "gen:%zu", n);
	got = mpq_conn_send_bytes(c, req, strlen(req), TMO);
	if (got)
		return (int)got;
	got = mpq_conn_recv_bytes(c, (void **)&buf, SIZE_MAX, tmo);
	if (got < 0)
		return (int)got;
	for (i = 0; i < n && (size_t)got == n; i++)
		if (buf[i] != i % 251)
			break;
	free(buf);
	return (size_t)got == n && i == n ? 0 : -EBADMSG;
}

static int py_check_gen(struct mpq_conn *c, size_t n)
{
	return py_check_gen_tmo(c, n, TMO);
}

/* The exchanges every pairing runs: small, empty, 64 KiB, both ways. */
static int py_conversation(struct mpq_conn *c)
{
	static unsigned char big[65536 + 3];
	int ret;

	fill(big, sizeof(big), 7);
	ret = py_check_echo(c, "hello", 5);
	if (!ret)
		ret = py_check_echo(c, "", 0);
	if (!ret)
		ret = py_check_echo(c, big, sizeof(big));
	if (!ret)
		ret = py_check_gen(c, 100000);
	if (!ret)
		ret = py_check_gen(c, 0);
	if (!ret)
		ret = mpq_conn_send_bytes(c, "quit", 4, TMO);
	return ret;
}

/* ---- addresses: a path, an abstract name, TCP loopback ------------- */

FIXTURE(addr) {
	char addr[128];
};

FIXTURE_VARIANT(addr) {
	const char *kind;
};

FIXTURE_VARIANT_ADD(addr, path) { .kind = "path" };
FIXTURE_VARIANT_ADD(addr, abstract) { .kind = "abstract" };
FIXTURE_VARIANT_ADD(addr, tcp) { .kind = "tcp" };

FIXTURE_SETUP(addr)
{
	if (!strcmp(variant->kind, "path"))
		snprintf(self->addr, sizeof(self->addr), "/tmp/mpq-net-test-%d.sock",
			 getpid());
	else if (!strcmp(variant->kind, "abstract"))
		snprintf(self->addr, sizeof(self->addr), "@mpq-net-test-%d", getpid());
	else
		snprintf(self->addr, sizeof(self->addr), "127.0.0.1:0");
}

FIXTURE_TEARDOWN(addr)
{
	if (!strcmp(variant->kind, "path"))
		unlink(self->addr);
}

/* A C listener at the fixture's address; its bound address into addr. */
static int c_listen(struct __test_metadata *_metadata, const char *addr,
		    const void *key, size_t keylen, struct mpq_listener **l,
		    char *bound, size_t blen)
{
	int ret = mpq_listener_new(l, addr, key, keylen, NULL);

	if (ret)
		return ret;
	return mpq_listener_address(*l, bound, blen) < 0 ? -EIO : 0;
}

TEST_F(addr, a_c_listener_serves_a_python_client_both_ways)
{
	struct mpq_listener *l;
	struct mpq_conn *c;
	char bound[128];
	struct py p;

	ASSERT_EQ(0, c_listen(_metadata, self->addr, KEY, sizeof(KEY) - 1, &l,
			      bound, sizeof(bound)));
	ASSERT_EQ(0, py_start(&p, "connect", bound, KEYHEX, NULL));
	ASSERT_EQ(0, mpq_listener_accept(l, &c, TMO));
	EXPECT_EQ(0, py_conversation(c));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);
	mpq_listener_free(l);
}

TEST_F(addr, a_c_client_talks_to_a_python_listener_both_ways)
{
	struct mpq_conn *c;
	char bound[128];
	struct py p;

	ASSERT_EQ(0, py_start(&p, "listen", self->addr, KEYHEX, NULL));
	ASSERT_EQ(0, py_address(&p, bound, sizeof(bound)));
	ASSERT_EQ(0, mpq_client(&c, bound, KEY, sizeof(KEY) - 1, TMO));
	EXPECT_EQ(0, py_conversation(c));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);
}

TEST_F(addr, a_wrong_key_at_the_c_listener_is_eacces_and_python_raises)
{
	struct mpq_listener *l;
	struct mpq_conn *c = NULL;
	char bound[128];
	struct py p;

	ASSERT_EQ(0, c_listen(_metadata, self->addr, KEY, sizeof(KEY) - 1, &l,
			      bound, sizeof(bound)));
	ASSERT_EQ(0, py_start(&p, "connect", bound, WRONGHEX, NULL));
	EXPECT_EQ(-EACCES, mpq_listener_accept(l, &c, TMO));
	EXPECT_EQ(NULL, c);
	EXPECT_EQ(3, py_wait(&p));	/* AuthenticationError */
	mpq_listener_free(l);
}

TEST_F(addr, a_wrong_key_at_the_c_client_is_eacces_and_python_raises)
{
	struct mpq_conn *c = NULL;
	char bound[128];
	struct py p;

	ASSERT_EQ(0, py_start(&p, "listen", self->addr, WRONGHEX, NULL));
	ASSERT_EQ(0, py_address(&p, bound, sizeof(bound)));
	EXPECT_EQ(-EACCES, mpq_client(&c, bound, KEY, sizeof(KEY) - 1, TMO));
	EXPECT_EQ(3, py_wait(&p));
}

TEST_F(addr, without_a_key_there_is_no_handshake_as_with_authkey_none)
{
	struct mpq_listener *l;
	struct mpq_conn *c;
	char bound[128];
	struct py p;

	ASSERT_EQ(0, c_listen(_metadata, self->addr, NULL, 0, &l, bound,
			      sizeof(bound)));
	ASSERT_EQ(0, py_start(&p, "connect", bound, "-", NULL));
	ASSERT_EQ(0, mpq_listener_accept(l, &c, TMO));
	EXPECT_EQ(0, py_conversation(c));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);
	mpq_listener_free(l);
}

/* ---- Python 3.12's dialect ----------------------------------------- */

TEST(pythons_312_handshake_is_understood_both_ways)
{
	struct mpq_listener *l;
	struct mpq_conn *c = NULL;
	char bound[128];
	struct py p;

	/* mpq listens: it delivers {sha256}, answers the {sha256} challenge. */
	ASSERT_EQ(0, mpq_listener_new(&l, NULL, KEY, sizeof(KEY) - 1, NULL));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	ASSERT_EQ(0, py_start(&p, "connect", bound, KEYHEX, "312"));
	ASSERT_EQ(0, mpq_listener_accept(l, &c, TMO));
	EXPECT_EQ(0, py_conversation(c));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);
	/* And a wrong key is refused in that dialect too, on both ends. */
	ASSERT_EQ(0, py_start(&p, "connect", bound, WRONGHEX, "312"));
	EXPECT_EQ(-EACCES, mpq_listener_accept(l, &c, TMO));
	EXPECT_EQ(3, py_wait(&p));
	mpq_listener_free(l);

	/* mpq connects to a 3.12 listener. */
	snprintf(bound, sizeof(bound), "@mpq-py312-%d", getpid());
	ASSERT_EQ(0, py_start(&p, "listen", bound, KEYHEX, "312"));
	ASSERT_EQ(0, py_address(&p, bound, sizeof(bound)));
	ASSERT_EQ(0, mpq_client(&c, bound, KEY, sizeof(KEY) - 1, TMO));
	EXPECT_EQ(0, py_conversation(c));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);
	snprintf(bound, sizeof(bound), "@mpq-py312w-%d", getpid());
	ASSERT_EQ(0, py_start(&p, "listen", bound, WRONGHEX, "312"));
	ASSERT_EQ(0, py_address(&p, bound, sizeof(bound)));
	EXPECT_EQ(-EACCES, mpq_client(&c, bound, KEY, sizeof(KEY) - 1, TMO));
	EXPECT_EQ(3, py_wait(&p));
}

/*
 * A 3.12 peer without MD5 (FIPS mode) refuses an MD5 answer: mpq must
 * answer in the digest the challenge names, and need no MD5 itself.
 */
TEST(mpq_answers_in_the_digest_the_challenge_names)
{
	struct mpq_listener *l;
	struct mpq_conn *c = NULL;
	char bound[128];
	struct py p;

	snprintf(bound, sizeof(bound), "@mpq-pyfips-%d", getpid());
	ASSERT_EQ(0, py_start(&p, "listen", bound, KEYHEX, "312fips"));
	ASSERT_EQ(0, py_address(&p, bound, sizeof(bound)));
	ASSERT_EQ(0, mpq_client(&c, bound, KEY, sizeof(KEY) - 1, TMO));
	EXPECT_EQ(0, py_conversation(c));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);

	ASSERT_EQ(0, mpq_listener_new(&l, NULL, KEY, sizeof(KEY) - 1, NULL));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	ASSERT_EQ(0, py_start(&p, "connect", bound, KEYHEX, "312fips"));
	ASSERT_EQ(0, mpq_listener_accept(l, &c, TMO));
	EXPECT_EQ(0, py_conversation(c));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);
	mpq_listener_free(l);
}

/* ---- large messages ------------------------------------------------- */

FIXTURE(big) {
};

FIXTURE_SETUP(big)
{
}

FIXTURE_TEARDOWN(big)
{
}

TEST_F(big, messages_of_several_mib_go_both_ways_with_python)
{
	size_t n = 9 * 1024 * 1024 + 5;
	unsigned char *buf = malloc(n);
	struct mpq_conn *c;
	char bound[128];
	struct py p;

	ASSERT_NE(NULL, buf);
	fill(buf, n, 3);
	ASSERT_EQ(0, py_start(&p, "listen", "127.0.0.1:0", KEYHEX, NULL));
	ASSERT_EQ(0, py_address(&p, bound, sizeof(bound)));
	ASSERT_EQ(0, mpq_client(&c, bound, KEY, sizeof(KEY) - 1, TMO));
	EXPECT_EQ(0, py_check_echo(c, buf, n));
	EXPECT_EQ(0, py_check_gen(c, n));
	EXPECT_EQ(0, mpq_conn_send_bytes(c, "quit", 4, TMO));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);
	free(buf);
}

/*
 * Over 2 GiB - 1 Python switches to 0xffffffff and an 8-byte length; so
 * does mpq. 2 GiB + 3 bytes each way (about 7 GiB of memory at the peak,
 * Python's copies included).
 */
TEST_F_TIMEOUT(big, a_message_over_2_gib_takes_the_8_byte_header_both_ways, 600)
{
	size_t n = (2ULL << 30) + 3;
	unsigned char *buf = malloc(n);
	struct mpq_conn *c;
	char bound[128];
	struct py p;

	ASSERT_NE(NULL, buf);
	fill(buf, n, 11);
	snprintf(bound, sizeof(bound), "@mpq-py-big-%d", getpid());
	ASSERT_EQ(0, py_start(&p, "listen", bound, "-", NULL));
	ASSERT_EQ(0, py_address(&p, bound, sizeof(bound)));
	ASSERT_EQ(0, mpq_client(&c, bound, NULL, 0, TMO));
	/* Python reads and hashes 2 GiB slowly on a shared machine. */
	EXPECT_EQ(0, py_check_echo_tmo(c, buf, n, 500 * NSEC_PER_SEC));
	free(buf);
	EXPECT_EQ(0, py_check_gen_tmo(c, n, 500 * NSEC_PER_SEC));
	EXPECT_EQ(0, mpq_conn_send_bytes(c, "quit", 4, TMO));
	EXPECT_EQ(0, py_wait(&p));
	mpq_conn_free(c);
}

/* ---- a Connection over a socket, C to C ----------------------------- */

static void sock_pair(struct __test_metadata *_metadata, struct mpq_conn **a,
		      int *raw)
{
	int sv[2];

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	ASSERT_EQ(0, mpq_conn_from_fd(a, sv[0], 0));
	*raw = sv[1];
}

TEST(the_wire_format_is_pythons_4_byte_big_endian_length)
{
	unsigned char hdr[9];
	struct mpq_conn *c;
	int raw;

	sock_pair(_metadata, &c, &raw);
	ASSERT_EQ(0, mpq_conn_send_bytes(c, "abcde", 5, TMO));
	ASSERT_EQ(9, read(raw, hdr, sizeof(hdr)));
	EXPECT_EQ(0, memcmp(hdr, "\0\0\0\5abcde", 9));
	mpq_conn_free(c);
	close(raw);
}

TEST(the_8_byte_header_is_read_for_any_length)
{
	/* Python reads 0xffffffff + 8 bytes whatever the size: so do we. */
	static const unsigned char msg[] = "\xff\xff\xff\xff\0\0\0\0\0\0\0\3xyz";
	char buf[8];
	size_t len = sizeof(buf);
	struct mpq_conn *c;
	int raw;

	sock_pair(_metadata, &c, &raw);
	ASSERT_EQ(15, write(raw, msg, 15));
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	EXPECT_EQ(3, len);
	EXPECT_EQ(0, memcmp(buf, "xyz", 3));
	mpq_conn_free(c);
	close(raw);
}

TEST(listener_and_client_in_c_work_in_mpq_wait_and_poll)
{
	struct mpq_listener *l;
	struct mpq_conn *s, *c;
	struct mpq_wait_item it;
	char bound[128], buf[16];
	size_t len = sizeof(buf);
	pid_t pid;
	int st;

	ASSERT_EQ(0, mpq_listener_new(&l, "127.0.0.1:0", KEY, sizeof(KEY) - 1, NULL));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	pid = fork();
	if (!pid) {
		struct mpq_conn *cc;

		if (mpq_client(&cc, bound, KEY, sizeof(KEY) - 1, TMO))
			_exit(1);
		sleep_ms(100);
		if (mpq_conn_send_bytes(cc, "ping", 4, TMO))
			_exit(2);
		len = sizeof(buf);
		if (mpq_conn_recv_bytes_into(cc, buf, &len, TMO) || len != 4)
			_exit(3);
		_exit(0);
	}
	ASSERT_EQ(0, mpq_listener_accept(l, &s, TMO));
	EXPECT_EQ(0, mpq_conn_poll(s, 0));
	it.kind = MPQ_WAIT_CONN;
	it.conn = s;
	EXPECT_EQ(1, mpq_wait(&it, 1, TMO));
	EXPECT_EQ(1, it.ready);
	EXPECT_EQ(1, mpq_conn_poll(s, 0));
	EXPECT_LE(0, mpq_conn_fileno(s));
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(s, buf, &len, TMO));
	EXPECT_EQ(0, memcmp(buf, "ping", 4));
	ASSERT_EQ(0, mpq_conn_send_bytes(s, "pong", 4, TMO));
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	EXPECT_EQ(0, st);
	/* The peer is gone: ready in mpq_wait, and the end of file. */
	EXPECT_EQ(1, mpq_wait(&it, 1, TMO));
	len = sizeof(buf);
	EXPECT_EQ(-EPIPE, mpq_conn_recv_bytes_into(s, buf, &len, TMO));
	mpq_conn_free(s);
	(void)c;
	mpq_listener_free(l);
}

TEST(a_wrong_key_between_two_c_ends_is_eacces_on_both)
{
	struct mpq_listener *l;
	struct mpq_conn *c = NULL;
	char bound[128];
	pid_t pid;
	int st;

	ASSERT_EQ(0, mpq_listener_new(&l, NULL, KEY, sizeof(KEY) - 1, NULL));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	pid = fork();
	if (!pid) {
		struct mpq_conn *cc;

		_exit(mpq_client(&cc, bound, "other", 5, TMO) == -EACCES ? 0 : 1);
	}
	EXPECT_EQ(-EACCES, mpq_listener_accept(l, &c, TMO));
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	EXPECT_EQ(0, st);
	mpq_listener_free(l);
}

TEST(a_path_listener_unlinks_its_socket_when_closed)
{
	char path[64];
	struct mpq_listener *l;

	snprintf(path, sizeof(path), "/tmp/mpq-net-unlink-%d", getpid());
	ASSERT_EQ(0, mpq_listener_new(&l, path, NULL, 0, NULL));
	EXPECT_EQ(0, access(path, F_OK));
	EXPECT_EQ(-EADDRINUSE, mpq_listener_new(&(struct mpq_listener *){0}, path,
						NULL, 0, NULL));
	mpq_listener_free(l);
	EXPECT_EQ(-1, access(path, F_OK));
}

TEST(only_a_stream_socket_can_be_a_connection)
{
	struct mpq_conn *c;
	int fds[2];

	ASSERT_EQ(0, pipe(fds));
	EXPECT_EQ(-ENOTSOCK, mpq_conn_from_fd(&c, fds[0], 0));
	close(fds[0]);
	close(fds[1]);
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM, 0, fds));
	EXPECT_EQ(-EPROTOTYPE, mpq_conn_from_fd(&c, fds[0], 0));
	EXPECT_EQ(-EINVAL, mpq_conn_from_fd(&c, fds[0], 1));
	close(fds[0]);
	close(fds[1]);
}

TEST(a_too_short_buffer_is_emsgsize_and_the_message_stays)
{
	struct mpq_conn *c, *d;
	char buf[16];
	size_t len = 2;
	int raw;

	sock_pair(_metadata, &c, &raw);
	ASSERT_EQ(0, mpq_conn_from_fd(&d, raw, 0));
	ASSERT_EQ(0, mpq_conn_send_bytes(d, "hello", 5, TMO));
	EXPECT_EQ(-EMSGSIZE, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	EXPECT_EQ(5, len);
	len = sizeof(buf);
	EXPECT_EQ(0, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	EXPECT_EQ(5, len);
	EXPECT_EQ(0, memcmp(buf, "hello", 5));
	mpq_conn_free(c);
	mpq_conn_free(d);
}

TEST(a_socket_connection_is_handed_on_by_export_and_import)
{
	struct mpq_conn *c, *d;
	char handle[64], buf[8];
	size_t len = sizeof(buf);
	int raw;

	sock_pair(_metadata, &c, &raw);
	ASSERT_LT(0, mpq_conn_export(c, handle, sizeof(handle)));
	EXPECT_EQ(0, strncmp(handle, "mpq-conn:stream:", 16));
	ASSERT_EQ(0, mpq_conn_import(&d, handle));
	mpq_conn_free(c);		/* the imported one has its own fd */
	ASSERT_EQ(0, mpq_conn_send_bytes(d, "via", 3, TMO));
	ASSERT_EQ(7, read(raw, buf, sizeof(buf)));
	EXPECT_EQ(0, memcmp(buf, "\0\0\0\3via", 7));
	EXPECT_EQ(-EOPNOTSUPP, mpq_conn_backend(d));
	(void)len;
	mpq_conn_free(d);
	close(raw);
}

/* ---- hostile and silent peers --------------------------------------- */

TEST(a_header_python_cannot_send_is_eproto_for_good)
{
	char buf[16];
	size_t len = sizeof(buf);
	struct mpq_conn *c;
	int raw;

	sock_pair(_metadata, &c, &raw);
	ASSERT_EQ(8, write(raw, "\x80\0\0\0abcd", 8));
	EXPECT_EQ(-EPROTO, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	EXPECT_EQ(-EPROTO, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	EXPECT_EQ(1, mpq_conn_poll(c, 0));
	mpq_conn_free(c);
	close(raw);
}

TEST(a_huge_length_is_never_allocated_up_front)
{
	/* 2^62 bytes claimed, 1 MiB sent: a receive waits, then times out. */
	static const unsigned char hdr[] = "\xff\xff\xff\xff\x40\0\0\0\0\0\0\0";
	static unsigned char body[1 << 20];
	struct mpq_conn *c;
	void *out = NULL;
	int raw;

	sock_pair(_metadata, &c, &raw);
	if (fork() == 0) {
		if (write(raw, hdr, 12) != 12)
			_exit(1);
		/* The socket buffer takes less than this: the rest blocks. */
		for (size_t off = 0; off < sizeof(body);) {
			ssize_t n = write(raw, body + off, sizeof(body) - off);

			if (n <= 0)
				_exit(1);
			off += (size_t)n;
		}
		sleep_ms(2000);
		_exit(0);
	}
	close(raw);
	EXPECT_EQ(-ETIMEDOUT, mpq_conn_recv_bytes(c, &out, SIZE_MAX,
						  300 * NSEC_PER_MSEC));
	EXPECT_EQ(NULL, out);
	/* And a buffer of the caller's is refused without a byte read. */
	char small[64];
	size_t len = sizeof(small);

	EXPECT_EQ(-EMSGSIZE, mpq_conn_recv_bytes_into(c, small, &len, 0));
	EXPECT_EQ(1ULL << 62, len);
	mpq_conn_free(c);
	wait(NULL);
}

TEST(a_peer_that_leaves_mid_message_is_econnaborted_then_epipe)
{
	char buf[16];
	size_t len = sizeof(buf);
	struct mpq_conn *c;
	int raw;

	sock_pair(_metadata, &c, &raw);
	ASSERT_EQ(4 + 5 + 6, write(raw, "\0\0\0\5hello\0\0\0\x09short", 15));
	close(raw);
	EXPECT_EQ(0, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	len = sizeof(buf);
	EXPECT_EQ(-ECONNABORTED, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	len = sizeof(buf);
	EXPECT_EQ(-EPIPE, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	mpq_conn_free(c);
}

TEST(a_receive_that_times_out_mid_message_keeps_what_it_took)
{
	char buf[16];
	size_t len = sizeof(buf);
	struct mpq_conn *c;
	int raw;

	sock_pair(_metadata, &c, &raw);
	ASSERT_EQ(7, write(raw, "\0\0\0\x0a" "abc", 7));
	EXPECT_EQ(-ETIMEDOUT, mpq_conn_recv_bytes_into(c, buf, &len,
						       50 * NSEC_PER_MSEC));
	ASSERT_EQ(7, write(raw, "defghij", 7));
	len = sizeof(buf);
	EXPECT_EQ(0, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	EXPECT_EQ(10, len);
	EXPECT_EQ(0, memcmp(buf, "abcdefghij", 10));
	mpq_conn_free(c);
	close(raw);
}

TEST(a_send_cut_by_its_timeout_shuts_the_sending_side)
{
	size_t n = 16 << 20;
	unsigned char *big = calloc(1, n);
	struct mpq_conn *c, *d;
	void *out = NULL;
	int raw;

	ASSERT_NE(NULL, big);
	sock_pair(_metadata, &c, &raw);
	ASSERT_EQ(0, mpq_conn_from_fd(&d, raw, 0));
	/* Nobody reads: 16 MiB cannot go; part of it did. */
	EXPECT_EQ(-ETIMEDOUT, mpq_conn_send_bytes(c, big, n, 100 * NSEC_PER_MSEC));
	EXPECT_EQ(-EPIPE, mpq_conn_send_bytes(c, "x", 1, TMO));
	EXPECT_EQ(-ECONNABORTED, mpq_conn_recv_bytes(d, &out, SIZE_MAX, TMO));
	EXPECT_EQ(NULL, out);
	free(big);
	mpq_conn_free(c);
	mpq_conn_free(d);
}

/*
 * A sender killed by SIGKILL at a random point, many times: the receiver
 * gets whole, intact messages, then -ECONNABORTED (killed mid-message) or
 * -EPIPE (between messages), never a part of one and never a hang.
 */
static int killed_sender(void *arg)
{
	struct mpq_conn *c = arg;
	static unsigned char buf[1 << 20];
	unsigned int seed = (unsigned int)getpid(), i;

	for (i = 0;; i++) {
		size_t n = 8 + (size_t)rand_r(&seed) % (sizeof(buf) - 8);

		fill(buf + 8, n - 8, i);
		memcpy(buf, &n, sizeof(n));
		if (mpq_conn_send_bytes(c, buf, n, TMO))
			return 1;
	}
}

TEST(a_sender_killed_at_random_points_cuts_no_message_short)
{
	unsigned int seed = 1234, round;
	unsigned char *want = malloc(1 << 20);

	ASSERT_NE(NULL, want);
	for (round = 0; round < 30; round++) {
		struct mpq_conn *c, *d;
		unsigned int got = 0;
		void *out;
		pid_t pid;
		int sv[2], ret, st;

		ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
		ASSERT_EQ(0, mpq_conn_from_fd(&c, sv[0], 0));
		ASSERT_EQ(0, mpq_conn_from_fd(&d, sv[1], 0));
		pid = spawn(killed_sender, d);
		mpq_conn_free(d);
		usleep(rand_r(&seed) % 20000);
		kill(pid, SIGKILL);
		for (;;) {
			ret = (int)mpq_conn_recv_bytes(c, &out, SIZE_MAX, TMO);
			if (ret < 0)
				break;
			size_t n;

			memcpy(&n, out, sizeof(n));
			fill(want + 8, n - 8, got);
			EXPECT_EQ(n, (size_t)ret);
			EXPECT_EQ(0, memcmp(want + 8, (unsigned char *)out + 8, n - 8));
			free(out);
			got++;
		}
		EXPECT_TRUE(ret == -EPIPE || ret == -ECONNABORTED);
		waitpid(pid, &st, 0);
		EXPECT_TRUE(WIFSIGNALED(st));
		mpq_conn_free(c);
	}
	free(want);
}

TEST(a_silent_peer_times_out_the_handshake_on_both_sides)
{
	struct mpq_listener_attr attr = { .handshake_timeout_ns = 200 * NSEC_PER_MSEC };
	struct mpq_listener *l;
	struct mpq_conn *c = NULL;
	char bound[128];
	int raw;
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	/* A listener waits no longer than the caller's timeout ... */
	ASSERT_EQ(0, mpq_listener_new(&l, NULL, KEY, sizeof(KEY) - 1, NULL));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	raw = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(un.sun_path + 1, bound + 1);
	ASSERT_EQ(0, connect(raw, (struct sockaddr *)&un,
			     offsetof(struct sockaddr_un, sun_path) + strlen(bound)));
	EXPECT_EQ(-ETIMEDOUT, mpq_listener_accept(l, &c, 200 * NSEC_PER_MSEC));
	close(raw);
	mpq_listener_free(l);

	/* ... nor, with MPQ_FOREVER, longer than its handshake bound. */
	ASSERT_EQ(0, mpq_listener_new(&l, NULL, KEY, sizeof(KEY) - 1, &attr));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	raw = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(un.sun_path + 1, bound + 1);
	ASSERT_EQ(0, connect(raw, (struct sockaddr *)&un,
			     offsetof(struct sockaddr_un, sun_path) + strlen(bound)));
	EXPECT_EQ(-ETIMEDOUT, mpq_listener_accept(l, &c, MPQ_FOREVER));
	close(raw);

	/* A client of a listener that never answers: its timeout holds. */
	raw = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in in = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(in);

	ASSERT_EQ(0, bind(raw, (struct sockaddr *)&in, sizeof(in)));
	ASSERT_EQ(0, listen(raw, 4));
	ASSERT_EQ(0, getsockname(raw, (struct sockaddr *)&in, &sl));
	snprintf(bound, sizeof(bound), "127.0.0.1:%d", ntohs(in.sin_port));
	EXPECT_EQ(-ETIMEDOUT, mpq_client(&c, bound, KEY, sizeof(KEY) - 1,
					 200 * NSEC_PER_MSEC));
	close(raw);
	mpq_listener_free(l);
}

TEST(a_peer_speaking_garbage_fails_the_handshake_with_eproto)
{
	struct mpq_listener *l;
	struct mpq_conn *c = NULL;
	char bound[128];
	int raw;
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	ASSERT_EQ(0, mpq_listener_new(&l, NULL, KEY, sizeof(KEY) - 1, NULL));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	raw = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(un.sun_path + 1, bound + 1);
	ASSERT_EQ(0, connect(raw, (struct sockaddr *)&un,
			     offsetof(struct sockaddr_un, sun_path) + strlen(bound)));
	ASSERT_EQ(18, write(raw, "GET / HTTP/1.0\r\n\r\n", 18));
	EXPECT_EQ(-EPROTO, mpq_listener_accept(l, &c, TMO));
	close(raw);
	/* The listener goes on: the next peer is served. */
	pid_t pid = fork();

	if (!pid) {
		struct mpq_conn *cc;

		_exit(mpq_client(&cc, bound, KEY, sizeof(KEY) - 1, TMO) ? 1 : 0);
	}
	EXPECT_EQ(0, mpq_listener_accept(l, &c, TMO));
	int st;

	waitpid(pid, &st, 0);
	EXPECT_EQ(0, st);
	mpq_conn_free(c);
	mpq_listener_free(l);
}

TEST(addresses_are_parsed_as_documented)
{
	struct mpq_listener *l;
	char bound[128];

	ASSERT_EQ(0, mpq_listener_new(&l, "[::1]:0", NULL, 0, NULL));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	EXPECT_EQ(0, strncmp(bound, "[::1]:", 6));
	/* And IPv6 carries messages as IPv4 does. */
	pid_t pid = fork();

	if (!pid) {
		struct mpq_conn *cc;

		_exit(mpq_client(&cc, bound, NULL, 0, TMO) ||
		      mpq_conn_send_bytes(cc, "v6", 2, TMO) ? 1 : 0);
	}
	struct mpq_conn *c;
	char buf[4];
	size_t len = sizeof(buf);
	int st;

	ASSERT_EQ(0, mpq_listener_accept(l, &c, TMO));
	EXPECT_EQ(0, mpq_conn_recv_bytes_into(c, buf, &len, TMO));
	EXPECT_EQ(2, len);
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	EXPECT_EQ(0, st);
	mpq_conn_free(c);
	mpq_listener_free(l);
	ASSERT_EQ(0, mpq_listener_new(&l, "@mpq-parse-test", NULL, 0, NULL));
	ASSERT_LT(0, mpq_listener_address(l, bound, sizeof(bound)));
	EXPECT_STREQ("@mpq-parse-test", bound);
	mpq_listener_free(l);
	EXPECT_EQ(-EINVAL, mpq_client(&(struct mpq_conn *){0}, NULL, NULL, 0, 0));
	EXPECT_EQ(-EINVAL, mpq_listener_new(&l, "127.0.0.1:99999", NULL, 0, NULL));
	EXPECT_EQ(-ECONNREFUSED, mpq_client(&(struct mpq_conn *){0}, "@mpq-nobody-here",
					    NULL, 0, TMO));
}

TEST_HARNESS_MAIN
