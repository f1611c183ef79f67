/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPortcullisNATS.h - nats.c (NATS, and JetStream's key-value buckets: the fleet's bucket), which
 * Swift calls directly: none of the fleet's calls is variadic. Its own module so that only the
 * program that joins a fleet (portcullisd) links libnats.
 */
#ifndef CPORTCULLIS_NATS_H
#define CPORTCULLIS_NATS_H

#include <nats/nats.h>

#endif /* CPORTCULLIS_NATS_H */
