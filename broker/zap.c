/* zap.c — ZAP handler admitting configured CURVE keys; see zap.h. */
#include "carehub_wire.h"
#include "zap.h"

#include <errno.h>
#include <string.h>
#include <zmq.h>

#include "log.h"

void *zap_open(void *ctx)
{
    void *s = zmq_socket(ctx, ZMQ_REP);
    if (!s)
        return NULL;
    int linger = 0;
    (void)zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger); /* best effort */
    if (zmq_bind(s, "inproc://zeromq.zap.01") < 0) {
        int e = errno;
        zmq_close(s);
        errno = e;
        return NULL;
    }
    return s;
}

static void send_str(void *s, const char *str, size_t n, int more)
{
    if (zmq_send(s, str, n, more ? ZMQ_SNDMORE : 0) < 0)
        log_warn("zap: reply failed: %s", zmq_strerror(errno));
}

void zap_handle(void *zap, const config_t *cfg)
{
    for (;;) {
        /* Request: version, request id, domain, address, routing id, mechanism, credentials… */
        zmq_msg_t part[8];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t scratch;
            zmq_msg_t *m = n < 8 ? &part[n] : &scratch;
            zmq_msg_init(m);
            if (zmq_msg_recv(m, zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(m);
                for (int i = 0; i < n && i < 8; i++)
                    zmq_msg_close(&part[i]);
                return; /* EAGAIN: nothing pending */
            }
            more = zmq_msg_more(m);
            if (m == &scratch)
                zmq_msg_close(m);
            n++;
        }
        const char *status = "400", *text = "key not configured";
        char user[CAREHUB_ID_MAX + 1] = "";
        if (n >= 7 && n <= 8 && zmq_msg_size(&part[5]) == 5 &&
            memcmp(zmq_msg_data(&part[5]), "CURVE", 5) == 0 && zmq_msg_size(&part[6]) == 32) {
            char z85[41];
            if (zmq_z85_encode(z85, zmq_msg_data(&part[6]), 32)) {
                const config_agent_t *a = config_find_agent_by_key(cfg, z85);
                if (a) {
                    status = "200";
                    text = "OK";
                    strncpy(user, a->id, sizeof user - 1);
                } else {
                    log_warn("zap: refused CURVE key %.8s… (not listed under agents)", z85);
                }
            }
        } else {
            text = "CURVE required";
        }
        int have_version = n >= 2;
        send_str(zap, "1.0", 3, 1);
        if (have_version)
            send_str(zap, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), 1);
        else
            send_str(zap, "", 0, 1);
        send_str(zap, status, 3, 1);
        send_str(zap, text, strlen(text), 1);
        send_str(zap, user, strlen(user), 1);
        send_str(zap, "", 0, 0);
        for (int i = 0; i < n && i < 8; i++)
            zmq_msg_close(&part[i]);
    }
}
