// MQTT.js (the npm package `mqtt`) as an MQTT 5 device of the pushsim reference server.
//
//   node server_device.js '<json>'
//
// json: {"url": "ws://127.0.0.1:P/mqtt", "clientId", "username", "password", "inbox",
//        "receiveMaximum"?: R}
// Prints one JSON line per thing seen, flushed: {"event": "connack", "sessionPresent",
// "properties"}, {"event": "suback", "granted"}, {"event": "message", "topic", "payload",
// "properties"}, {"event": "error", "code", "message"}; exits 0 when its stdin closes, 1 on
// an error or after 20 s.
"use strict";
const mqtt = require("mqtt");

const spec = JSON.parse(process.argv[2]);
const say = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");
const properties = { sessionExpiryInterval: 0xffffffff };
if (spec.receiveMaximum) properties.receiveMaximum = spec.receiveMaximum;

const client = mqtt.connect(spec.url, {
  protocolVersion: 5,
  clientId: spec.clientId,
  username: spec.username,
  password: spec.password,
  clean: false,
  keepalive: 60,
  reconnectPeriod: 0,
  properties,
});
setTimeout(() => { say({ event: "timeout" }); process.exit(1); }, 20000);

client.on("connect", (connack) => {
  say({ event: "connack", sessionPresent: connack.sessionPresent,
        properties: connack.properties || {} });
  client.subscribe(spec.inbox, { qos: 1 }, (err, granted) => {
    if (err) { say({ event: "error", code: err.code, message: err.message }); process.exit(1); }
    say({ event: "suback", granted: granted.map((g) => g.qos) });
  });
});
client.on("message", (topic, payload, packet) => {
  say({ event: "message", topic, payload: payload.toString("utf8"),
        properties: packet.properties || {} });
});
// The test closes our stdin once it saw what it waited for (the server recorded the
// PUBACK): then disconnect cleanly and exit 0.
process.stdin.on("end", () => client.end(false, {}, () => process.exit(0)));
process.stdin.resume();
client.on("error", (err) => {
  say({ event: "error", code: err.code === undefined ? null : err.code, message: err.message });
  process.exit(1);
});
