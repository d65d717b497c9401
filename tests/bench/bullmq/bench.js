// BullMQ's worker on N no-op jobs, as `cargo bench --bench queue` runs
// flowpilot's: the jobs are added first (addBulk), then one Worker with
// the given concurrency (BullMQ's own default is 1; 50 is the figure the
// throughput issue compares against) runs them; removeOnComplete, like
// keep_result 0. Prints the seconds from the worker's start to the last
// completion. Usage: node bench.js <redis url> <queue> <jobs> <concurrency>
const { Queue, Worker } = require("bullmq");

async function main() {
  const [url, name, jobs, concurrency] = process.argv.slice(2);
  const u = new URL(url);
  const connection = { host: u.hostname, port: Number(u.port || 6379), db: Number(u.pathname.slice(1) || 0) };
  const queue = new Queue(name, { connection });
  const n = Number(jobs);
  for (let i = 0; i < n; i += 1000) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) {
      batch.push({ name: "noop", data: {}, opts: { removeOnComplete: true } });
    }
    await queue.addBulk(batch);
  }
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const started = process.hrtime.bigint();
  const worker = new Worker(name, async () => null, { connection, concurrency: Number(concurrency) });
  worker.on("completed", () => {
    done += 1;
    if (done === n) finish();
  });
  await finished;
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(secs.toFixed(3), Math.round(process.memoryUsage().rss / 1048576));
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
