"""Functions written with the official Apache Flink StateFun Python SDK (3.3.0), served with
aiohttp, for Spindle's compatibility test. Nothing here knows about Spindle.

py/counter  state: count (int), note (string, expires 2 s after write)
            py/Command {"op": "add", "n"}     count += n, asks py/echo to echo "<id>:<count>"
            py/Command {"op": "note", "text"} stores note           -> egress "note-set:<id>:<text>"
            py/Command {"op": "probe"}        reads note            -> egress "probe:<id>:present|absent:<note>"
            py/Command {"op": "arm"}          send_after 2 s "ding-a" (token a), "ding-b" (token b),
                                              "ding-c" (token c), then cancels c in the same call
            py/Command {"op": "disarm", "token"} cancels a delayed message
            string "ding-*" (delayed, from itself)  -> egress "delayed:<id>:<text>"
            string from py/echo                    -> egress "echoed:<text>"
py/echo     state: seen (long); replies "<text>#seen=<seen>" to its caller
py/relay    string -> Kafka egress "py/kafka-out" (kafka_egress_message): topic "relayed",
            key = its id, value "<text>!" (StateFun's KafkaProducerRecord)
"""
import os
from datetime import timedelta

from aiohttp import web
from statefun import (StatefulFunctions, RequestReplyHandler, Context, Message, ValueSpec,
                      IntType, LongType, StringType, make_json_type, message_builder,
                      egress_message_builder, kafka_egress_message)

COMMAND = make_json_type("py/Command")
functions = StatefulFunctions()


def egress(context: Context, text: str):
    context.send_egress(egress_message_builder(target_typename="py/out", value=text,
                                               value_type=StringType))


@functions.bind(typename="py/counter",
                specs=[ValueSpec(name="count", type=IntType),
                       ValueSpec(name="note", type=StringType,
                                 expire_after_write=timedelta(seconds=2))])
async def counter(context: Context, message: Message):
    me = context.address.id
    if message.is_type(COMMAND):
        cmd = message.as_type(COMMAND)
        op = cmd["op"]
        if op == "add":
            count = (context.storage.count or 0) + cmd["n"]
            context.storage.count = count
            context.send(message_builder(target_typename="py/echo", target_id=me,
                                         str_value=f"{me}:{count}"))
        elif op == "note":
            context.storage.note = cmd["text"]
            egress(context, f"note-set:{me}:{cmd['text']}")
        elif op == "probe":
            note = context.storage.note
            egress(context, f"probe:{me}:{'absent' if note is None else 'present'}:{note}")
        elif op == "arm":
            for name in ("a", "b", "c"):
                context.send_after(timedelta(seconds=2),
                                   message_builder(target_typename="py/counter", target_id=me,
                                                   str_value=f"ding-{name}"),
                                   cancellation_token=name)
            context.cancel_delayed_message("c")
        elif op == "disarm":
            context.cancel_delayed_message(cmd["token"])
        else:
            raise ValueError(f"unknown op {op}")
    elif message.is_string():
        text = message.as_string()
        if text.startswith("ding-"):
            egress(context, f"delayed:{me}:{text}")
        else:
            egress(context, f"echoed:{text}")
    else:
        raise TypeError(f"unexpected message type {message.value_typename()}")


@functions.bind(typename="py/echo", specs=[ValueSpec(name="seen", type=LongType)])
async def echo(context: Context, message: Message):
    seen = (context.storage.seen or 0) + 1
    context.storage.seen = seen
    context.send(message_builder(target_typename=context.caller.typename,
                                 target_id=context.caller.id,
                                 str_value=f"{message.as_string()}#seen={seen}"))


@functions.bind(typename="py/relay")
async def relay(context: Context, message: Message):
    context.send_egress(kafka_egress_message(typename="py/kafka-out", topic="relayed",
                                             key=context.address.id,
                                             value=message.as_string() + "!"))


handler = RequestReplyHandler(functions)


async def handle(request: web.Request) -> web.Response:
    reply = await handler.handle_async(await request.read())
    return web.Response(body=reply, content_type="application/octet-stream")


app = web.Application()
app.add_routes([web.post("/statefun", handle)])

def tls_context():
    """HTTPS when TLS_CERT/TLS_KEY are set; with TLS_CLIENT_CA, callers must present a client
    certificate issued by it (mutual TLS)."""
    if "TLS_CERT" not in os.environ:
        return None
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
    if "TLS_CLIENT_CA" in os.environ:
        ctx.load_verify_locations(os.environ["TLS_CLIENT_CA"])
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None,
                ssl_context=tls_context())
