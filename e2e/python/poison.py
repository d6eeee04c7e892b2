"""A function written with the official Apache Flink StateFun Python SDK (3.3.0), served with
aiohttp, for Spindle's poison-batch test (worker/tests/poison.rs). Nothing here knows about
Spindle.

py/item  state: count (int)
         py/Item {"seq", "poison"?}: count += 1, egress "done:<id>:<seq>:<count>" to py/out.
         With "poison": true it first creates a new file in $SIGNAL_DIR (the test's cue that
         the message is in flight) and never answers — the invocation stalls, as one that
         kills or hangs its worker would.
"""
import asyncio
import os
import time

from aiohttp import web
from statefun import (StatefulFunctions, RequestReplyHandler, Context, Message, ValueSpec,
                      IntType, StringType, make_json_type, egress_message_builder)

ITEM = make_json_type("py/Item")
functions = StatefulFunctions()


@functions.bind(typename="py/item", specs=[ValueSpec(name="count", type=IntType)])
async def item(context: Context, message: Message):
    m = message.as_type(ITEM)
    if m.get("poison"):
        name = f"{context.address.id}-{m['seq']}-{time.time_ns()}-{os.getpid()}"
        with open(os.path.join(os.environ["SIGNAL_DIR"], name), "w") as f:
            f.write("in flight\n")
        await asyncio.sleep(3600)
    count = (context.storage.count or 0) + 1
    context.storage.count = count
    context.send_egress(egress_message_builder(
        target_typename="py/out", value=f"done:{context.address.id}:{m['seq']}:{count}",
        value_type=StringType))


handler = RequestReplyHandler(functions)


async def handle(request: web.Request) -> web.Response:
    reply = await handler.handle_async(await request.read())
    return web.Response(body=reply, content_type="application/octet-stream")


app = web.Application()
app.add_routes([web.post("/statefun", handle)])

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
