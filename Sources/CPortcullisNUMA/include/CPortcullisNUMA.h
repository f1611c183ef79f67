/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPortcullisNUMA.h - libnuma (the offence tables' placement on the node of the workers' CPUs), which
 * Swift calls directly. Its own module so that only the program that keeps offence tables
 * (portcullisd) links libnuma.
 */
#ifndef CPORTCULLIS_NUMA_H
#define CPORTCULLIS_NUMA_H

#include <numa.h>

#endif /* CPORTCULLIS_NUMA_H */
