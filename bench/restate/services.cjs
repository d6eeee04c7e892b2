// Restate's side of `spindle-bench restate`: the same workloads as Spindle's example functions
// (examples/greeter/src/counter.rs and hop.rs), as virtual objects of the TypeScript SDK.
// Usage: node services.cjs PORT WEBHOOK_URL
"use strict";

// The SDK uses Promise.withResolvers, which Node 20 lacks. Installed before the SDK loads.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

const restate = require("@restatedev/restate-sdk");

const [port, webhook] = process.argv.slice(2);
if (!port || !webhook) {
  console.error("usage: node services.cjs PORT WEBHOOK_URL");
  process.exit(2);
}

// `counter/{key}`: reads an integer state, adds the message's value, stores it, returns the sum.
const counter = restate.object({
  name: "counter",
  handlers: {
    add: async (ctx, add) => {
      const total = ((await ctx.get("total")) ?? 0) + add.value;
      ctx.set("total", total);
      return { seq: add.seq, key: ctx.key, total };
    },
  },
});

// The id of the next address of a chain: the same function as `Hop::next_id` in Rust.
function nextId(hop) {
  const n = (BigInt(hop.seq) * 31n + BigInt(hop.remaining) * 17n) % BigInt(Math.max(hop.spread, 1));
  return `h${n}`;
}

// `hop/{key}`: counts itself, then forwards the chain with a one-way call; the last hop reports
// to the benchmark's webhook, as Spindle's last hop writes to its egress.
const hop = restate.object({
  name: "hop",
  handlers: {
    hop: async (ctx, h) => {
      const hops = ((await ctx.get("hops")) ?? 0) + 1;
      ctx.set("hops", hops);
      if (h.remaining === 0) {
        const body = JSON.stringify({ seq: h.seq, key: ctx.key, total: hops });
        await ctx.run("report", async () => {
          const res = await fetch(webhook, { method: "POST", body, headers: { "content-type": "application/json" } });
          if (!res.ok) throw new Error(`webhook answered ${res.status}`);
        });
        return;
      }
      ctx.objectSendClient(hop, nextId(h)).hop({ ...h, remaining: h.remaining - 1 });
    },
  },
});

restate.serve({ services: [counter, hop], port: Number(port) });
