// A round-trip function written with the official StateFun JavaScript SDK (apache-flink-statefun
// 3.3.0, unchanged), for Spindle's exactly-once tests: every input goes out again as one egress
// record per configured egress, carrying the input's sequence number and the address's counter.
// Served with node's http module at POST /statefun on 127.0.0.1:$PORT. See README.md.
//
// js/roundtrip  state: count (int), the number of inputs this address has processed
//               js/RoundTrip {"seq": N}  count += 1
//                                        -> {"id": ID, "seq": N, "count": count} as
//                                           js/RoundTripOut to each egress of
//                                           $ROUNDTRIP_EGRESSES (comma-separated typenames,
//                                           default js/rt-out)
"use strict";

const http = require("http");
const {StateFun, egressMessageBuilder} = require("apache-flink-statefun");

const INPUT = StateFun.jsonType("js/RoundTrip");
const OUTPUT = StateFun.jsonType("js/RoundTripOut");
const egresses = (process.env.ROUNDTRIP_EGRESSES || "js/rt-out").split(",").map((s) => s.trim()).filter((s) => s);

const statefun = new StateFun();
statefun.bind({
    typename: "js/roundtrip",
    specs: [{name: "count", type: StateFun.intType()}],
    fn(context, message) {
        if (!message.is(INPUT)) {
            throw new Error(`js/roundtrip takes js/RoundTrip, not ${message.valueTypeName}`);
        }
        const {seq} = message.as(INPUT);
        if (!Number.isSafeInteger(seq)) {
            throw new Error(`js/RoundTrip needs an integer "seq", got ${JSON.stringify(seq)}`);
        }
        const count = (context.storage.count || 0) + 1;
        context.storage.count = count;
        for (const typename of egresses) {
            context.send(egressMessageBuilder({typename, value: {id: context.self.id, seq, count}, valueType: OUTPUT}));
        }
    },
});

const port = parseInt(process.env.PORT || "8000", 10);
http.createServer(statefun.handler()).listen(port, "127.0.0.1", () => {
    console.error(`statefun-js-roundtrip: StateFun JavaScript SDK 3.3.0 listening on 127.0.0.1:${port}, egresses ${egresses.join(", ")}`);
});
