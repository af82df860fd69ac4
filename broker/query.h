/*
 * query.h — reading cases: the `query` op (a carehub extension, docs/protocol.md).
 *
 *   {v, op:"query", id, what:"case",  case}
 *   {v, op:"query", id, what:"cases", status?, agency?, type?, since?, after?, limit?}
 *   {v, op:"query", id, what:"trail", case}
 *   → {v, op:"result", id, what, …}   or a nack (forbidden, not_found, invalid)
 *
 * Least privilege: schools, reporters and monitors read no case; an agency
 * reads only the cases it holds an assignment in; a supervisor reads every
 * case. Every read of a case's personal data (what:"case") and every refusal
 * is appended to the trail (kinds `read`, `read_refused`) with the agent.
 */
#ifndef CAREHUB_QUERY_H
#define CAREHUB_QUERY_H

#include <msgpack.h>

#include "config.h"
#include "frame.h"
#include "store.h"

typedef enum {
    QUERY_OK = 0,
    QUERY_FORBIDDEN,
    QUERY_NOT_FOUND,
    QUERY_INVALID,
    QUERY_UNAVAILABLE,
} query_result_t;

/*
 * Answer one query from `agent` (its `map` is the decoded request). On
 * QUERY_OK the reply {v, op:"result", id, what, …} is in `out` (the caller
 * sends it and calls frame_out_end); otherwise `why` (and `field`) say what
 * to put in the nack.
 */
query_result_t query_handle(const config_t *cfg, store_t *st, const config_agent_t *agent,
                            const char *id, const msgpack_object *map, frame_out_t *out,
                            char *why, size_t whysize, const char **field);

#endif
