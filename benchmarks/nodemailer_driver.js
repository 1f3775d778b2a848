// Nodemailer reference client for the benchmarks (copied into .bench/node and run there).
//
//   node driver.js send HOST PORT CONNS COUNT BODY_BYTES   -> {"elapsed":..,"count":..,"rate":..}
//   node driver.js mem HOST PORT ATTACHMENT_PATH            -> {"base_kb":..,"peak_kb":..}
//   node driver.js stall HOST PORT ATTACHMENT_PATH          -> {"stall_ms":..,"elapsed":..}
//
// "send" warms the pool (2 x CONNS messages), then submits COUNT messages at once and
// times until every one is accepted. Pool: pool=true, maxConnections=CONNS, no
// per-connection message limit, no TLS (loopback sink): the same settings as the others.
"use strict";
const fs = require("fs");
const nodemailer = require("nodemailer");

function vm(field) {
  const m = fs.readFileSync("/proc/self/status", "utf8").match(new RegExp(field + ":\\s+(\\d+)"));
  return m ? Number(m[1]) : null;
}

function body(size) {
  const line = "The quick brown fox jumps over the lazy dog, again and again and again.\n";
  let s = "";
  while (s.length < size) s += line;
  return s.slice(0, size);
}

async function send(host, port, conns, count, size) {
  const transport = nodemailer.createTransport({
    host, port, secure: false, ignoreTLS: true, pool: true,
    maxConnections: conns, maxMessages: Infinity, name: "bench.local",
  });
  const text = body(size);
  const one = (i) => transport.sendMail({
    from: "App <app@example.com>", to: "user@example.org",
    subject: `Benchmark message ${i}`, text,
  });
  let errors = 0;
  const all = (n, base) => Promise.all(
    Array.from({ length: n }, (_, i) => one(base + i).catch(() => { errors++; })));
  await all(conns * 2, 0);
  const t0 = process.hrtime.bigint();
  await all(count, 1000);
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  transport.close();
  return { elapsed, count, errors, rate: count / elapsed };
}

async function mem(host, port, path) {
  const transport = nodemailer.createTransport({
    host, port, secure: false, ignoreTLS: true, name: "bench.local",
  });
  await transport.verify();
  const base = vm("VmHWM");
  await transport.sendMail({
    from: "app@example.com", to: "user@example.org", subject: "Attachment",
    text: "see attached", attachments: [{ path }],
  });
  const peak = vm("VmHWM");
  transport.close();
  return { base_kb: base, peak_kb: peak, delta_kb: peak - base };
}

async function stall(host, port, path) {
  // The longest gap of a 1 ms timer while one message with the attachment is sent.
  const transport = nodemailer.createTransport({
    host, port, secure: false, ignoreTLS: true, name: "bench.local",
  });
  await transport.verify();
  let longest = 0;
  let last = process.hrtime.bigint();
  const timer = setInterval(() => {
    const now = process.hrtime.bigint();
    longest = Math.max(longest, Number(now - last) / 1e6);
    last = now;
  }, 1);
  const t0 = process.hrtime.bigint();
  await transport.sendMail({
    from: "app@example.com", to: "user@example.org", subject: "Attachment",
    text: "see attached", attachments: [{ path }],
  });
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(timer);
  transport.close();
  return { stall_ms: longest, elapsed };
}

async function main() {
  const [mode, host, port, ...rest] = process.argv.slice(2);
  let result;
  if (mode === "send") {
    result = await send(host, Number(port), Number(rest[0]), Number(rest[1]), Number(rest[2]));
  } else if (mode === "mem") {
    result = await mem(host, Number(port), rest[0]);
  } else if (mode === "stall") {
    result = await stall(host, Number(port), rest[0]);
  } else {
    throw new Error("unknown mode " + mode);
  }
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

main().catch((err) => { console.error(err); process.exit(1); });
