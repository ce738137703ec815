/*
 * rpc_health.c - the grpc.health.v1.Health/Check every server answers
 * (ts_rpc_server_set_serving): "" is the whole server, any other service
 * name is NOT_FOUND.
 */
#include <stdint.h>
#include <stdio.h>

#include "health.pb-c.h"
#include "rpc.h"
#include "rpc_int.h"
#include "rpc_message.h"

/* Built-in grpc.health.v1.Health/Check: "" is the whole server. */
void rpc_health_check(ts_rpc_call *call, const uint8_t *req, size_t len,
                      void *user) {
  ts_rpc_server *s = user;
  Grpc__Health__V1__HealthCheckRequest *rq =
      grpc__health__v1__health_check_request__unpack(NULL, len, req);
  if (!rq) {
    ts_rpc_call_fail(call, TS_EINVAL,
                     "malformed grpc.health.v1.HealthCheckRequest");
    return;
  }
  if (rq->service[0] != '\0') {
    char msg[TS_ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "unknown service '%.200s'", rq->service);
    grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
    ts_rpc_call_fail(call, TS_ENOTFOUND, msg);
    return;
  }
  grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
  Grpc__Health__V1__HealthCheckResponse resp =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status =
      rpc_server_serving(s)
          ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
          : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  ts_rpc_call_reply_message(call, &resp.base);
}
