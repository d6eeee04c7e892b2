// The SDK compatibility app, written with the official StateFun JavaScript SDK
// (apache-flink-statefun 3.3.0, unchanged) and served with node's http module at POST /statefun
// on 127.0.0.1:$PORT. The Java and Go apps (e2e/java, e2e/go) are the same app, with namespace
// "js" here; docs/testing.md ("StateFun SDKs") describes it. Nothing here knows about Spindle.
//
// js/counter  state: count (int), note (string, expires 2 s after write)
//             js/Command "add N"      count += N, asks js/echo to echo "id:count"
//             js/Command "note TEXT"  stores note                  -> egress "note-set:id:TEXT"
//             js/Command "probe"      reads note                   -> egress "probe:id:present:TEXT" | "probe:id:absent:"
//             js/Command "arm"        send_after 2 s "ding-a", "ding-b", "ding-c" (tokens id-a, id-b,
//                                     id-c), then cancels id-c in the same call
//             js/Command "disarm T"   cancels the delayed message of token id-T
//             string "ding-*"         (delayed, from itself)       -> egress "delayed:id:ding-*"
//             string from js/echo                                  -> egress "echoed:TEXT"
// js/echo     state: seen (int: this SDK has no long type); replies "TEXT#seen=N" to its caller
// js/relay    string TEXT -> Kafka egress js/kafka-out: topic "relayed", key = id, value "TEXT!"
"use strict";

const http = require("http");
const {StateFun, messageBuilder, egressMessageBuilder, kafkaEgressMessage} = require("apache-flink-statefun");

// js/Command is a custom type: the command as UTF-8 text.
const COMMAND = StateFun.customType("js/Command", (s) => Buffer.from(s, "utf8"), (b) => b.toString("utf8"));

function egress(context, text) {
    context.send(egressMessageBuilder({typename: "js/out", value: text, valueType: StateFun.stringType()}));
}

const statefun = new StateFun();

statefun.bind({
    typename: "js/counter",
    specs: [
        {name: "count", type: StateFun.intType()},
        {name: "note", type: StateFun.stringType(), expireAfterWrite: 2000},
    ],
    fn(context, message) {
        const me = context.self.id;
        if (message.is(COMMAND)) {
            const text = message.as(COMMAND);
            const space = text.indexOf(" ");
            const [op, arg] = space < 0 ? [text, ""] : [text.slice(0, space), text.slice(space + 1)];
            switch (op) {
                case "add": {
                    const count = (context.storage.count || 0) + parseInt(arg, 10);
                    context.storage.count = count;
                    context.send(messageBuilder({typename: "js/echo", id: me, value: `${me}:${count}`}));
                    break;
                }
                case "note":
                    context.storage.note = arg;
                    egress(context, `note-set:${me}:${arg}`);
                    break;
                case "probe": {
                    const note = context.storage.note;
                    egress(context, note === null || note === undefined ? `probe:${me}:absent:` : `probe:${me}:present:${note}`);
                    break;
                }
                case "arm":
                    for (const name of ["a", "b", "c"]) {
                        context.sendAfter(2000, messageBuilder({typename: "js/counter", id: me, value: `ding-${name}`}), `${me}-${name}`);
                    }
                    context.cancelDelayedMessage(`${me}-c`);
                    break;
                case "disarm":
                    context.cancelDelayedMessage(`${me}-${arg}`);
                    break;
                default:
                    throw new Error(`unknown command ${op}`);
            }
        } else if (message.isString()) {
            const text = message.asString();
            egress(context, text.startsWith("ding-") ? `delayed:${me}:${text}` : `echoed:${text}`);
        } else {
            throw new Error(`unexpected message type ${message.valueTypeName}`);
        }
    },
});

statefun.bind({
    typename: "js/echo",
    specs: [{name: "seen", type: StateFun.intType()}],
    fn(context, message) {
        const seen = (context.storage.seen || 0) + 1;
        context.storage.seen = seen;
        const caller = context.caller;
        if (!caller) {
            throw new Error("echo needs a caller");
        }
        context.send(messageBuilder({typename: caller.typename, id: caller.id, value: `${message.asString()}#seen=${seen}`}));
    },
});

statefun.bind({
    typename: "js/relay",
    fn(context, message) {
        context.send(kafkaEgressMessage({typename: "js/kafka-out", topic: "relayed", key: context.self.id, value: `${message.asString()}!`}));
    },
});

const port = parseInt(process.env.PORT || "8000", 10);
http.createServer(statefun.handler()).listen(port, "127.0.0.1", () => {
    console.error(`statefun-js-app: StateFun JavaScript SDK 3.3.0 listening on 127.0.0.1:${port}`);
});
