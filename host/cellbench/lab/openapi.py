"""The OpenAPI 3.1 description of the lab's HTTP API (served at /api/openapi.json)."""

from .jobs import FIELDS, TICK_MS

_ERROR = {"type": "object", "required": ["error", "field"], "properties": {
    "error": {"type": "string", "description": "'<field>: <message>', one line"},
    "field": {"type": "string", "description": "the request field at fault"}}}

_JOB = {"type": "object", "properties": {
    "id": {"type": "integer"}, "channel_id": {"type": "string"},
    "state": {"type": "string", "enum": ["queued", "starting", "running", "paused", "interrupted",
                                         "done", "fault", "stopped", "failed", "cancelled"]},
    "cell_name": {"type": "string"}, "mass_mg": {"type": ["number", "null"]},
    "protocol_name": {"type": "string"}, "tick_ms": {"type": ["integer", "null"]},
    "stop_reason": {"type": ["string", "null"]}, "created_unix_s": {"type": "number"},
    "started_unix_s": {"type": ["number", "null"]}, "ended_unix_s": {"type": ["number", "null"]},
    "has_log": {"type": "boolean"}, "has_model": {"type": "boolean"}}}

_LIVE = {"type": "object", "description": "the newest record in display units ({} before one)",
         "properties": {
             "seq": {"type": "integer"}, "t_s": {"type": "number"}, "v_V": {"type": "number"},
             "i_mA": {"type": "number", "description": "> 0 charges the cell"},
             "cycle": {"type": "integer"}, "step_no": {"type": "integer"},
             "step_count": {"type": "integer"}, "steps": {"type": "integer"},
             "step_kind": {"type": "string"}, "step_type": {"type": "string"},
             "soc": {"type": ["number", "null"]}, "soc_std": {"type": ["number", "null"]},
             "q_chg_mAh": {"type": "number"}, "q_dch_mAh": {"type": "number"},
             "fault": {"type": "integer"}, "fault_text": {"type": "string"},
             "remaining_s": {"type": "number"}, "rx_unix_s": {"type": "number"},
             "cycles_done": {"type": "integer"},
             "cap_mAh": {"type": ["number", "null"],
                         "description": "the estimator's capacity (null: no such state)"},
             "cap_std_mAh": {"type": ["number", "null"]},
             "cap_pct": {"type": ["number", "null"],
                         "description": "cap_mAh in % of the model's capacity_Ah"},
             "r_ohm": {"type": ["number", "null"],
                       "description": "the estimator's charge-transfer resistance"},
             "r_std_ohm": {"type": ["number", "null"]}}}

_CHANNEL = {"type": "object", "properties": {
    "id": {"type": "string"}, "kind": {"type": "string", "enum": ["sim", "usb"]},
    "board": {"type": ["string", "null"]}, "held": {"type": "boolean"},
    "port": {"type": ["string", "null"]}, "error": {"type": "string"},
    "job": {"oneOf": [{"$ref": "#/components/schemas/Job"}, {"type": "null"}]},
    "queued": {"type": "array", "items": {"type": "integer"}},
    "live": {"$ref": "#/components/schemas/Live"}}}

_JOB_REQUEST = {"type": "object", "additionalProperties": False, "required": ["cell_name"],
                "properties": {
    "protocol": {"type": "object", "description": "an aurora-unicycler protocol (JSON)"},
    "protocol_file": {"type": "string", "description": "a name from GET /api/protocols"},
    "cell_name": {"type": "string", "maxLength": 80},
    "mass_mg": {"type": "number", "exclusiveMinimum": 0},
    "model": {"type": "object", "description": "a cell model (models/model.schema.json) for "
              "the board's SoC estimator"},
    "model_file": {"type": "string", "description": "a name from GET /api/models"},
    "tick_ms": {"type": "integer", "minimum": TICK_MS[0], "maximum": TICK_MS[1]}},
    "description": "exactly one of protocol / protocol_file; at most one of model / model_file"}
assert set(_JOB_REQUEST["properties"]) == set(FIELDS)


def _reply(schema, what="OK"):
    return {"description": what, "content": {"application/json": {"schema": schema}}}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


_ERRORS = {str(code): _reply(_ref("Error"), what) for code, what in (
    (400, "body is not JSON"), (401, "token missing or wrong"), (404, "no such channel or job"),
    (409, "not in this state"), (422, "a field is invalid (named)"))}


def _op(summary, ok, body=None, params=(), code="200", writes=False):
    op = {"summary": summary, "responses": {code: ok, **{k: v for k, v in _ERRORS.items()
                                                        if writes or k == "404"}}}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True,
                             "schema": {"type": "integer" if p == "jid" else "string"}} for p in params]
    if writes:
        op["security"] = [{"token": []}]
    return op


def spec(version):
    """The OpenAPI document (dict)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "cellbench lab", "version": version,
                 "description": "One host's channels (boards), their job queues, live state and "
                 "logs. POST needs the token when the lab listens beyond localhost."},
        "components": {
            "schemas": {"Error": _ERROR, "Job": _JOB, "Live": _LIVE, "Channel": _CHANNEL,
                        "JobRequest": _JOB_REQUEST},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/api/lab": {"get": _op("the lab: data dir, speed of simulated boards, channels",
                                    _reply({"type": "object"}))},
            "/api/protocols": {"get": _op("names of the protocol files a job may name",
                                          _reply({"type": "array", "items": {"type": "string"}}))},
            "/api/models": {"get": _op("names of the model files a job or a channel may name",
                                       _reply({"type": "array", "items": {"type": "string"}}))},
            "/api/channels": {
                "get": _op("every channel with its job and live state",
                           _reply({"type": "array", "items": _ref("Channel")})),
                "post": _op("add a simulated channel", _reply(_ref("Channel"), "created"),
                            body={"type": "object", "additionalProperties": False,
                                  "required": ["cell"], "properties": {
                                      "cell": {"type": "string", "description":
                                               "the simulated cell: a models/ name or a path"},
                                      "seed": {"type": "integer", "minimum": 0},
                                      "board": {"type": "string", "default": "sim"}}},
                            code="201", writes=True)},
            "/api/channels/{cid}": {"get": _op("one channel, its jobs and completed cycles",
                                               _reply(_ref("Channel")), params=["cid"])},
            "/api/channels/{cid}/release": {"post": _op(
                "let a channel held after a fault or a stop start its queued jobs",
                _reply(_ref("Channel")), params=["cid"], writes=True)},
            "/api/channels/{cid}/series": {"get": _op(
                "the newest logged job's V, I, SoC (thinned) and capacity / CE per cycle",
                _reply({"type": "object"}), params=["cid"])},
            "/api/channels/{cid}/jobs": {"post": _op(
                "queue a job (checked first: nothing is stored when a field is bad)",
                _reply(_ref("Job"), "queued"), body=_ref("JobRequest"), params=["cid"],
                code="201", writes=True)},
            "/api/jobs": {"get": _op("every job (?channel=<id> for one channel's)",
                                     _reply({"type": "array", "items": _ref("Job")}))},
            "/api/jobs/{jid}": {"get": _op("one job", _reply(_ref("Job")), params=["jid"])},
            **{f"/api/jobs/{{jid}}/{action}": {"post": _op(
                f"{action} the job", _reply(_ref("Job"), "accepted"), params=["jid"],
                code="202", writes=True)} for action in ("pause", "resume", "stop")},
            "/api/jobs/{jid}/log": {"get": _op("the job's BDF log (CSV)", {
                "description": "the log", "content": {"text/csv": {}}}, params=["jid"])},
            "/api/jobs/{jid}/sidecar": {"get": _op("the log's JSON sidecar",
                                                   _reply({"type": "object"}), params=["jid"])},
            "/api/history": {"get": _op("the lab's events, newest first (?channel=, ?limit=)",
                                        _reply({"type": "array"}))},
            "/api/events": {"get": {"summary": "server-sent events: JSON objects with type "
                                    "state | cycle | event | resync (?channel=<id> for one channel; "
                                    "resync: messages were dropped, re-read the state)",
                                    "responses": {"200": {"description": "event stream",
                                                          "content": {"text/event-stream": {}}}}}},
        },
    }
