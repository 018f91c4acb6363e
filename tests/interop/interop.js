// A client nobody in the project wrote: Node's @grpc/grpc-js with @grpc/proto-loader,
// built only from the contracts as shipped (protos/ and protos/third_party/) and the
// health proto of grpc-health-check. It calls the real services and prints what it
// saw as one JSON object; tests/interop/test_node.py judges it.
//
//   SAGE_ACTIVATION=host:port SAGE_AGENT=host:port SAE=id FEATURES=1,2 node interop.js

'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const ROOT = path.resolve(__dirname, '..', '..');
const INCLUDES = [
  path.join(ROOT, 'protos'),
  path.join(ROOT, 'protos', 'third_party'),
  path.join(path.dirname(require.resolve('grpc-health-check/package.json')), 'proto'),
];
const FILES = [
  'sagex/api/activation/v1/activation_service.proto',
  'sagex/api/agent/v1/agent_service.proto',
  'google/longrunning/operations.proto',
  'google/rpc/error_details.proto',
  'health/v1/health.proto',
];
const TEXT = 'Naïve café owners said “héllo” 🎉 twice.';

const definition = protoLoader.loadSync(FILES, {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: INCLUDES,
});
const api = grpc.loadPackageDefinition(definition);

// protobufjs for what arrives packed in google.protobuf.Any and in status details.
const types = new protobuf.Root();
types.resolvePath = (origin, target) => {
  for (const dir of INCLUDES) {
    const candidate = path.join(dir, target);
    if (fs.existsSync(candidate)) return candidate;
  }
  return target;
};
types.loadSync(FILES, { keepCase: true });

function unpack(any) {
  const type = types.lookupType(any.type_url.split('/').pop());
  return { type: type.fullName.replace(/^\./, ''), value: type.toObject(type.decode(any.value), { longs: String }) };
}

// The google.rpc.Status a failed call carries in its trailers, with its details decoded.
function richStatus(err) {
  const [raw] = err.metadata.get('grpc-status-details-bin');
  if (!raw) return null;
  const Status = types.lookupType('google.rpc.Status');
  const status = Status.toObject(Status.decode(raw), { longs: String });
  return { code: status.code, message: status.message, details: (status.details || []).map(unpack) };
}

const unary = (client, method, request, options = {}) => new Promise((resolve, reject) => {
  client[method](request, { deadline: Date.now() + (options.timeoutMs || 60000) }, (err, res) => (err ? reject(err) : resolve(res)));
});

const readAll = (call) => new Promise((resolve, reject) => {
  const messages = [];
  call.on('data', (m) => messages.push(m));
  call.on('error', reject);
  call.on('end', () => resolve(messages));
});

async function failure(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('the call was expected to fail');
}

function violation(err) {
  const status = richStatus(err);
  const bad = status && status.details.find((d) => d.type === 'google.rpc.BadRequest');
  return { code: err.code, field: bad ? bad.value.field_violations[0].field : null, message: err.details };
}

async function main() {
  const activationAddress = process.env.SAGE_ACTIVATION;
  const agentAddress = process.env.SAGE_AGENT;
  const sae = process.env.SAE;
  const features = process.env.FEATURES.split(',').map(Number);
  const insecure = grpc.credentials.createInsecure();
  const v1 = api.sagex.api;
  const activation = new v1.activation.v1.ActivationService(activationAddress, insecure);
  const agent = new v1.agent.v1.AgentService(agentAddress, insecure);
  const operations = new api.google.longrunning.Operations(agentAddress, insecure);
  const Health = api.grpc.health.v1.Health;
  const out = {};

  out.health = {};
  for (const [name, address] of [['activation', activationAddress], ['agent', agentAddress]]) {
    const health = new Health(address, insecure);
    out.health[name] = (await unary(health, 'Check', { service: '' })).status;
    health.close();
  }

  const info = await unary(activation, 'GetModelInfo', {});
  out.model = { name: info.model.name, layers: info.model.loaded_layers, saes: info.saes.map((s) => s.id) };

  // One stream, two batches: a good one, then one naming an SAE that does not exist.
  const call = activation.StreamActivations({ deadline: Date.now() + 120000 });
  call.write({ batch_id: 'node-good', sae_id: sae, texts: [TEXT], top_k: { k: 4 }, per_batch_errors: true });
  call.write({ batch_id: 'node-bad', sae_id: 'no-such-sae', texts: ['x'], top_k: { k: 1 }, per_batch_errors: true });
  call.end();
  const messages = await readAll(call);
  const good = messages.filter((m) => m.batch_id === 'node-good');
  const bad = messages.filter((m) => m.batch_id === 'node-bad');
  const tokens = good.flatMap((m) => m.tokens.texts);
  const csr = good.every((m) => {
    const n = m.activations.num_tokens;
    const offsets = m.activations.row_offsets;
    const nnz = m.activations.feature_ids.length / 4;
    return n === m.tokens.ids.length && offsets.length === 4 * (n + 1)
      && offsets.readUInt32LE(4 * n) === nnz && m.activations.values.length === 4 * nnz;
  });
  const top = good[0].activations.values.length ? good[0].activations.values.readFloatLE(0) : 0;
  out.stream = {
    messages: messages.length, tokens: tokens.length, joined: tokens.join('') === TEXT, csr, first_value: top,
    complete: good.length > 0 && good[good.length - 1].batch_complete,
    starts: good.flatMap((m) => m.tokens.char_starts), ends: good.flatMap((m) => m.tokens.char_ends),
    bad_batch: bad.map((m) => ({ code: m.error && m.error.code, message: m.error && m.error.message })),
  };

  // The agent as other systems call it: a batch job, then WaitOperation until it is done.
  const op = await unary(agent, 'BatchExplainFeatures', {
    sae_id: sae, feature_ids: features, request_id: `node-interop-${process.pid}`,
  });
  const done = await unary(operations, 'WaitOperation', { name: op.name, timeout: { seconds: 120 } },
    { timeoutMs: 130000 });
  const result = done.result === 'response' ? unpack(done.response) : null;
  out.operation = {
    name: op.name, done: done.done, result: done.result,
    response_type: result && result.type, explanations: result ? result.value.explanations.length : 0,
  };

  // A bad request: the details say which field, decoded from the shipped google.rpc protos.
  const explain = agent.ExplainFeature({ sae_id: sae, feature_id: 10000000 }, { deadline: Date.now() + 30000 });
  out.error = violation(await failure(readAll(explain)));

  // Bytes no Python client would send: a string field that is not UTF-8.
  const raw = new grpc.Client(activationAddress, insecure);
  const malformed = new Promise((resolve, reject) => {
    raw.makeUnaryRequest('/sagex.api.activation.v1.ActivationService/Tokenize', (b) => b, (b) => b,
      Buffer.from('0a02fffe', 'hex'), (err, res) => (err ? reject(err) : resolve(res)));
  });
  out.malformed = violation(await failure(malformed));

  for (const client of [activation, agent, operations, raw]) client.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
