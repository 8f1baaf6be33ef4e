#!/usr/bin/env node
// The smallest Node.js client of Aisle: track one event, ask for recommendations with a bearer token, and
// read a bad request's field violations (google.rpc.BadRequest) from INVALID_ARGUMENT.
//
//   node example.js --target localhost:50051 --token "$TOKEN" --user u1 --item i42
//
// The stubs are built at run time from the contract (../../protos, the include root) by @grpc/proto-loader.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const CONTRACT = path.resolve(__dirname, '../../protos');
const GOOGLE_RPC = path.join(__dirname, 'protos');

/** The aisle.v1 services, loaded from the .proto files (field names as in the files: user_id, item_id...). */
function loadAisle() {
  const definition = protoLoader.loadSync(
    ['aisle/v1/events.proto', 'aisle/v1/recommendations.proto'],
    { keepCase: true, longs: String, enums: String, defaults: true, includeDirs: [CONTRACT] },
  );
  return grpc.loadPackageDefinition(definition).aisle.v1;
}

/** The google.rpc.BadRequest field violations carried by an error's `grpc-status-details-bin` trailer. */
function fieldViolations(error) {
  const [details] = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (!details) return [];
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : path.join(GOOGLE_RPC, target));
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
  const status = root.lookupType('google.rpc.Status').decode(details);
  // Any comes from protobufjs's bundled well-known types, which keep the .proto field names (type_url).
  const badRequestType = root.lookupType('google.rpc.BadRequest');
  return status.details
    .filter((any) => any.type_url === 'type.googleapis.com/google.rpc.BadRequest')
    .flatMap((any) => badRequestType.decode(any.value).fieldViolations);
}

/** Promise form of a unary call with a deadline. */
function call(client, method, request, metadata, seconds) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + seconds * 1000 }, (error, response) =>
      error ? reject(error) : resolve(response));
  });
}

async function main() {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: 'localhost:50051' },
      token: { type: 'string', default: '' },
      user: { type: 'string', default: 'u1' },
      item: { type: 'string', default: 'i1' },
      'event-id': { type: 'string', default: `node-${Date.now()}` },
    },
  });
  const aisle = loadAisle();
  // Plaintext for a local server; grpc.credentials.createSsl() behind the TLS front.
  const credentials = grpc.credentials.createInsecure();
  const events = new aisle.EventService(values.target, credentials);
  const recommendations = new aisle.RecommendationService(values.target, credentials);
  const metadata = new grpc.Metadata();
  if (values.token) metadata.set('authorization', `Bearer ${values.token}`);

  // Track: writes are safe to retry with the same event id.
  const tracked = await call(events, 'Track', {
    events: [{ event_id: values['event-id'], type: 'VIEW', user_id: values.user, item_id: values.item }],
  }, metadata, 10);
  console.log(`tracked accepted=${tracked.accepted} duplicates=${tracked.duplicates} rejected=${tracked.rejected.length}`);

  // Recommend: the very next answer reflects the event just tracked.
  const answer = await call(recommendations, 'Recommend', { user_id: values.user, k: 5, explain: true }, metadata, 5);
  console.log(`recommended ${answer.items.map((item) => item.item_id).join(' ')}`);
  console.log(`recommendation_id ${answer.recommendation_id}`);

  // Bad input: INVALID_ARGUMENT, with each offending field in a google.rpc.BadRequest detail.
  try {
    await call(recommendations, 'Recommend', { user_id: values.user, k: 1000 }, metadata, 5);
    throw new Error('expected INVALID_ARGUMENT for k=1000');
  } catch (error) {
    if (error.code !== grpc.status.INVALID_ARGUMENT) throw error;
    for (const violation of fieldViolations(error)) {
      console.log(`invalid ${violation.field}: ${violation.description}`);
    }
  }
  events.close();
  recommendations.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
