// SPDX-License-Identifier: Apache-2.0
#include "CPortcullisNATS.h"

/* The fleet uses JetStream's key-value API as nats.c 3.4 has it (kvStore_*, kvWatcher_*, kvWatchOptions). */
_Static_assert(NATS_VERSION_NUMBER >= 0x030400, "nats.c 3.4 or later is needed (libnats-dev; tools/install-deps)");
