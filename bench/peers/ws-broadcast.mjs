// The Node `ws` peer: a broadcast server. Clients connect to ws://127.0.0.1:PORT; each line
// written to the control port (PORT+1) is sent to every client.
import { WebSocketServer } from "ws";
import { createServer } from "node:net";
import { createInterface } from "node:readline";

const port = Number(process.argv[2] ?? 9100);
const wss = new WebSocketServer({ port, host: "127.0.0.1", perMessageDeflate: false, clientTracking: true });
createServer((conn) => {
  createInterface({ input: conn }).on("line", (line) => {
    for (const client of wss.clients) client.send(line);
  });
}).listen(port + 1, "127.0.0.1", () => console.log(`node ws on ${port}, control on ${port + 1}`));
