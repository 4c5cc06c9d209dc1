// Listen as a user and print what arrives.
//   node --experimental-websocket examples/listen.mjs ws://127.0.0.1:8080/ws <token>
// (Node 22+ needs no flag; in a browser, import from src/herald.js the same way.)
import { connect } from "../src/herald.js";

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: listen.mjs <ws url> <token>   (herald serve --dev prints both)");
  process.exit(64);
}
const herald = connect({ url, token, topics: [] });
herald.addEventListener("open", (e) => console.log(`connected as ${e.detail.user_id}`));
herald.addEventListener("message", (e) => console.log(`message #${e.detail.seq}: ${e.detail.title ?? ""} ${e.detail.body ?? ""}`));
herald.addEventListener("topic", (e) => console.log(`[${e.detail.topic}] ${e.detail.title ?? ""}`));
herald.addEventListener("close", (e) => console.log(`closed ${e.detail.code}${e.detail.willReconnect ? ", reconnecting" : ""}`));
