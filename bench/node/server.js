'use strict';
// The Node.js yardstick of `make bench`: the Stripe webhook handler a user would write
// instead of hookline. Settings: PORT (or argv[2]), REDIS_URL (or argv[3]),
// STRIPE_WEBHOOK_SECRET, WORKERS (default 2). Nothing is logged per request.
const cluster = require('node:cluster');
const Fastify = require('fastify');
const Redis = require('ioredis');
const Stripe = require('stripe');

const port = Number(process.env.PORT ?? process.argv[2] ?? 3000);
const redisUrl = process.env.REDIS_URL ?? process.argv[3] ?? 'redis://127.0.0.1:6379';
const secret = process.env.STRIPE_WEBHOOK_SECRET;
const workers = Number(process.env.WORKERS ?? 2);
const DEDUP_TTL_SECS = 30 * 24 * 3600;
if (!secret) throw new Error('STRIPE_WEBHOOK_SECRET is not set');

if (cluster.isPrimary) {
  let stopping = false;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) console.error(`worker ${worker.process.pid} died (${signal ?? code})`);
    if (!stopping || Object.keys(cluster.workers).length === 0) process.exit(stopping ? 0 : 1);
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      stopping = true;
      for (const worker of Object.values(cluster.workers)) worker.kill();
    });
  }
} else {
  // Only the webhook helper is used: the API key is never sent anywhere.
  const stripe = new Stripe(process.env.STRIPE_API_KEY ?? 'sk_test_unused');
  const redis = new Redis(redisUrl);
  const app = Fastify();
  // Stripe signs the raw bytes, so the body stays a Buffer instead of being parsed.
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => done(null, body));
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.post('/webhooks/stripe', async (req, reply) => {
    let event;
    try {
      event = stripe.webhooks.constructEvent(req.body, req.headers['stripe-signature'], secret);
    } catch (err) {
      // The signature is checked first; what fails after it is the JSON.
      if (err instanceof SyntaxError) return reply.code(400).send({ error: 'body is not JSON' });
      return reply.code(401).send({ error: 'invalid signature' });
    }
    const session = event.data?.object ?? {};
    const email = session.customer_details?.email ?? session.customer_email;
    if (!email) return reply.code(400).send({ error: 'no customer email' });

    const fresh = await redis.set(`evt:${event.id}`, '1', 'EX', DEDUP_TTL_SECS, 'NX');
    if (fresh === null) return { status: 'duplicate', event_id: event.id };
    const contact = { email, name: session.customer_details?.name ?? '', last_event_id: event.id, amount: session.amount_total ?? 0 };
    const results = await redis
      .multi()
      .hset(`contact:${email}`, contact)
      .xadd('events', '*', 'id', event.id, 'type', event.type, 'email', email)
      .exec();
    const failed = results.find(([err]) => err);
    if (failed) throw failed[0];
    return { status: 'applied', event_id: event.id };
  });

  app.listen({ port, host: process.env.HOST ?? '127.0.0.1' });
}
