// SPDX-License-Identifier: MIT
/*
 * The library's version, so a program can tell which libmpq-net it runs
 * with (the SONAME says only the ABI).
 */
#include "net.h"

MPQ_NET_EXPORT const char *mpq_net_version(void)
{
	return MPQ_NET_VERSION;
}
