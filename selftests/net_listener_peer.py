#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""The Python end of selftests/net_listener_test.c: the real
multiprocessing.connection, as a listener or a client.

  net_listener_peer.py listen ADDRESS KEY [--dialect 311|312]
  net_listener_peer.py connect ADDRESS KEY [--dialect 311|312]

ADDRESS is mpq's form: a path, @abstract, host:port. KEY is hex, or '-'
for no authentication. A listener prints the address it bound on one line.
Then it serves requests until b'quit' or the end of file:
  b'gen:N'       answers N bytes, byte i being i % 251
  anything else  answers its length (8 bytes, big-endian) and SHA-256
Exit status: 0 done, 3 AuthenticationError, 4 EOFError, 1 anything else.

--dialect 312 replaces the handshake with Python 3.12's ({sha256}
challenges, prefixed answers, MD5 taken from old peers), written from
3.12's documented behaviour, so a 3.11 machine can test both dialects.
--dialect 312fips is 3.12 where MD5 is unavailable (FIPS mode): an MD5
answer is refused, so a peer must answer in the digest it was asked.
"""
import hashlib
import hmac
import os
import struct
import sys
from multiprocessing import connection as mc


def parse(addr):
    if addr.startswith('@'):
        return '\0' + addr[1:]
    if '/' not in addr and ':' in addr and addr.rsplit(':', 1)[1].isdigit():
        host, port = addr.rsplit(':', 1)
        return (host.strip('[]'), int(port))
    return addr


def show(addr):
    if isinstance(addr, tuple):
        return '%s:%d' % addr[:2]
    if isinstance(addr, bytes):     # an abstract name comes back as bytes
        addr = addr.decode()
    if addr.startswith('\0'):
        return '@' + addr[1:]
    return addr


# ---- Python 3.12's handshake, for --dialect 312 -------------------------
DIGESTS = {b'md5', b'sha256', b'sha384', b'sha3_256', b'sha3_384'}
NO_MD5 = False


def mac(authkey, message, name):
    if NO_MD5 and name == 'md5':
        raise ValueError('md5 unavailable')
    return hmac.new(authkey, message, name).digest()


def name_and_payload(message):
    if len(message) in (20, 16):
        return '', message
    if message.startswith(b'{'):
        curly = message.find(b'}', 1, 10)
        if curly > 0 and message[1:curly] in DIGESTS:
            return message[1:curly].decode(), message[curly + 1:]
    raise mc.AuthenticationError('unsupported digest: %r' % message)


def deliver_312(conn, authkey, digest_name='sha256'):
    message = b'{%s}' % digest_name.encode() + os.urandom(40)
    conn.send_bytes(b'#CHALLENGE#' + message)
    response = conn.recv_bytes(256)
    try:
        name, got = name_and_payload(response)
        try:
            expected = mac(authkey, message, name or 'md5')
        except ValueError:
            raise mc.AuthenticationError('%r unsupported' % (name or 'md5'))
        if len(expected) != len(got) or not hmac.compare_digest(expected, got):
            raise mc.AuthenticationError('digest received was wrong')
    except mc.AuthenticationError:
        conn.send_bytes(b'#FAILURE#')
        raise
    conn.send_bytes(b'#WELCOME#')


def answer_312(conn, authkey):
    message = conn.recv_bytes(256)
    if not message.startswith(b'#CHALLENGE#'):
        raise mc.AuthenticationError('expected challenge')
    message = message[len(b'#CHALLENGE#'):]
    if len(message) < 20:
        raise mc.AuthenticationError('challenge too short')
    name, _ = name_and_payload(message)
    if not name and not NO_MD5:
        response = mac(authkey, message, 'md5')
    else:
        name = name or 'sha256'
        response = b'{%s}' % name.encode() + mac(authkey, message, name)
    conn.send_bytes(response)
    if conn.recv_bytes(256) != b'#WELCOME#':
        raise mc.AuthenticationError('digest sent was rejected')


def serve(conn):
    pattern = bytes(i % 251 for i in range(251))
    while True:
        try:
            msg = conn.recv_bytes()
        except EOFError:
            return 0
        if msg == b'quit':
            return 0
        if msg.startswith(b'gen:'):
            n = int(msg[4:])
            reps = n // len(pattern) + 1
            conn.send_bytes(memoryview(pattern * reps)[:n])
            continue
        conn.send_bytes(struct.pack('!Q', len(msg)) +
                        hashlib.sha256(msg).digest())


def main():
    mode, addr, key = sys.argv[1:4]
    global NO_MD5
    dialect = sys.argv[sys.argv.index('--dialect') + 1] \
        if '--dialect' in sys.argv else '311'
    if dialect.startswith('312'):
        mc.deliver_challenge = deliver_312
        mc.answer_challenge = answer_312
        NO_MD5 = dialect == '312fips'

    authkey = None if key == '-' else bytes.fromhex(key)
    try:
        if mode == 'listen':
            with mc.Listener(parse(addr), authkey=authkey) as listener:
                print(show(listener.address), flush=True)
                with listener.accept() as conn:
                    return serve(conn)
        with mc.Client(parse(addr), authkey=authkey) as conn:
            return serve(conn)
    except mc.AuthenticationError as e:
        print('AuthenticationError:', e, file=sys.stderr)
        return 3
    except EOFError:
        print('EOFError', file=sys.stderr)
        return 4


if __name__ == '__main__':
    sys.exit(main())
