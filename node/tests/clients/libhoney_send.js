// Sends events to Atoll with libhoney-js, unchanged but for apiHost.
// argv: apiHost writeKey dataset count. Prints the statuses libhoney read
// back, as JSON.
const Libhoney = require("libhoney");

const [apiHost, writeKey, dataset, count] = process.argv.slice(2);
const statuses = [];
const hny = new Libhoney({
  apiHost,
  writeKey,
  dataset,
  responseCallback: (responses) => {
    for (const r of responses) {
      statuses.push({ status_code: r.status_code, error: String(r.error || "") });
    }
  },
});
for (let i = 0; i < Number(count); i++) {
  const ev = hny.newEvent();
  ev.add({ endpoint: `/js/${i % 3}`, status: 200, duration_ms: i, seq: i });
  if (i === 0) ev.timestamp = new Date(Date.UTC(2026, 10, 29, 8, 30, 0, 250));
  if (i % 4 === 0) {
    ev.sampleRate = 2;
    ev.sendPresampled();
  } else {
    ev.send();
  }
}
hny.flush().then(() => {
  console.log(JSON.stringify(statuses));
});
