// SPDX-License-Identifier: Apache-2.0
#include "CPortcullisNUMA.h"

/* numa_node_of_cpu, numa_tonode_memory and numa_max_node as libnuma's API version 2 has them. */
_Static_assert(LIBNUMA_API_VERSION >= 2, "libnuma's API version 2 is needed (libnuma-dev; tools/install-deps)");
