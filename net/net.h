/* SPDX-License-Identifier: MIT */
/* What the files of libmpq-net share; nothing here is API. */
#ifndef MPQ_NET_INTERNAL_H
#define MPQ_NET_INTERNAL_H

#include "mpq_net.h"

/* Only what the version script names is visible: see net/mpq-net.map. */
#define MPQ_NET_EXPORT		__attribute__((visibility("default")))

#endif
