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

#ifdef __cplusplus
}
#endif

#endif /* MPQ_NET_H */
