/*
 * cmd_health.c - `tessera health`: grpc.health.v1 Check, then KServe's
 * ServerLive and ServerReady.
 */
#include <stdio.h>

#include "client.h"
#include "health.pb-c.h"

/* Asks a KServe yes/no question (ServerLive, ServerReady). *answer is -1 if
 * the server has no KServe service (UNIMPLEMENTED), e.g. a worker. */
static int ask_flag(cli *c, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, int *answer,
                    ts_err *err) {
  ProtobufCMessage *resp;
  int rc = cli_call(c, method, req, resp_desc, &resp, err);
  *answer = -1;
  if (rc == TS_EUNSUPPORTED) return TS_OK;
  if (rc) return rc;
  /* Both replies are { bool = 1; }: read it through the descriptor. */
  const ProtobufCFieldDescriptor *field = &resp_desc->fields[0];
  *answer = *(const protobuf_c_boolean *)((const char *)resp + field->offset);
  protobuf_c_message_free_unpacked(resp, NULL);
  return TS_OK;
}

static const char *flag_text(int answer) {
  return answer < 0 ? "n/a (no KServe service)" : answer ? "true" : "false";
}

int cmd_health(cli *c, ts_err *err) {
  Grpc__Health__V1__HealthCheckRequest req =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp;
  req.service = (char *)(c->opt->service ? c->opt->service : "");
  int rc = cli_call(c, TS_RPC_HEALTH_CHECK_PATH, &req.base,
                    &grpc__health__v1__health_check_response__descriptor,
                    (ProtobufCMessage **)&resp, err);
  if (rc) return rc;
  int status = resp->status;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
      &grpc__health__v1__health_check_response__serving_status__descriptor,
      status);
  const char *status_text = v ? v->name : "UNKNOWN";
  printf("health: %s\n", status_text);

  Inference__ServerLiveRequest live_req = INFERENCE__SERVER_LIVE_REQUEST__INIT;
  Inference__ServerReadyRequest ready_req = INFERENCE__SERVER_READY_REQUEST__INIT;
  int live, ready = -1;
  rc = ask_flag(c, KSERVE_SERVICE "ServerLive", &live_req.base,
                &inference__server_live_response__descriptor, &live, err);
  if (!rc && live >= 0)
    rc = ask_flag(c, KSERVE_SERVICE "ServerReady", &ready_req.base,
                  &inference__server_ready_response__descriptor, &ready, err);
  if (rc) return rc;
  printf("live: %s\nready: %s\n", flag_text(live), flag_text(ready));
  if (status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
    return ts_err_set(err, TS_EUNAVAILABLE, "health status is %s",
                      status_text);
  if (live == 0 || ready == 0)
    return ts_err_set(err, TS_EUNAVAILABLE, "the server is %s",
                      live == 0 ? "not live" : "not ready");
  return TS_OK;
}
