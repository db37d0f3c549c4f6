// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Airlock's kernel programs, one object. The hook families live in their own
 * headers and share the maps of maps.h; one translation unit keeps a single
 * set of maps without relying on the BPF static linker's extern-map support,
 * which libbpf versions in the field handle differently. The daemon switches
 * off (autoload) the programs of the backend it does not use.
 */
#include "common.h"
#include "process.bpf.h"
#include "exec.bpf.h"
#include "net.bpf.h"
#include "unix.bpf.h"
#include "packet.bpf.h"
#include "raw_socket.bpf.h"
#include "protected_files.bpf.h"
#include "tamper_lsm.bpf.h"
#include "tamper_compat.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Anchor the event types in BTF so the ABI test can check their layout. */
struct airlock_exec_event *unused_exec_event __attribute__((unused));
struct airlock_net_event *unused_net_event __attribute__((unused));
struct airlock_guard_event *unused_guard_event __attribute__((unused));
struct airlock_unix_event *unused_unix_event __attribute__((unused));
struct airlock_unix_key *unused_unix_key __attribute__((unused));
struct airlock_raw_socket_event *unused_raw_socket_event __attribute__((unused));

/* Anchor the ABI's enums in BTF so the ABI test can check their values. */
enum airlock_event_kind *unused_event_kind __attribute__((unused));
enum airlock_decision *unused_decision __attribute__((unused));
enum airlock_reason *unused_reason __attribute__((unused));
enum airlock_backend *unused_backend __attribute__((unused));
enum airlock_match_via *unused_match_via __attribute__((unused));
enum airlock_identity_key_kind *unused_identity_key_kind __attribute__((unused));
enum airlock_guard_op *unused_guard_op __attribute__((unused));
enum airlock_grant_kind *unused_grant_kind __attribute__((unused));
enum airlock_block_kind *unused_block_kind __attribute__((unused));
