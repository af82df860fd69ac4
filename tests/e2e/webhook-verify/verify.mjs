// verify.mjs — check webhook signatures with the Standard Webhooks reference
// implementation (npm package `standardwebhooks`), for tests/e2e/test_webhooks.py.
//
// stdin: JSON lines {secret, headers, body} (body: the raw request body as a
// string; or body_b64: the raw bytes in base64). stdout: one JSON line per input
// line, in order: {"ok": true} or {"ok": false, "error": "..."}.
// Exit status 0 when every line was read (verdicts may be negative), 2 on a
// line that is not JSON. Install with `npm ci` here (or `make deps`).
import { createInterface } from "node:readline";
import swh from "standardwebhooks";

const { Webhook } = swh;
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
let bad = false;

for await (const line of rl) {
  if (!line.trim()) continue;
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: `input is not JSON: ${e.message}` }) + "\n");
    bad = true;
    continue;
  }
  try {
    const body = req.body_b64 !== undefined ? Buffer.from(req.body_b64, "base64") : req.body;
    new Webhook(req.secret).verify(body, req.headers);
    process.stdout.write(JSON.stringify({ ok: true }) + "\n");
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: `${e.name}: ${e.message}` }) + "\n");
  }
}
process.exitCode = bad ? 2 : 0;
