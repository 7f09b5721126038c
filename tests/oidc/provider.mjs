// A real OpenID provider (panva/oidc-provider) for Lanyard's identity tests.
//
//   node provider.mjs <config.json>
//
// config.json: {
//   "port": 0,                       // 0: any free port; a number: that port (a restart)
//   "keys_file": "/tmp/.../keys.json",
//   "audience": "lanyard",           // the `aud` of every access token
//   "clients": [{ "client_id": "ci-billing", "client_secret": "...",
//                 "alg": "ES256", "ttl": 300, "claims": { "repository": "acme/billing-api" } }]
// }
//
// Clients use the client-credentials grant, standing in for a CI system's token service:
// each token is a JWT access token (RFC 9068) signed with the provider's RS256 or ES256 key,
// with the client's `claims` added. The provider writes its keys (kid, alg, private and
// public PEM) to keys_file so that a test can also sign tokens the provider would never
// issue (expired, wrong audience, ...), and prints `listening <issuer>` once it serves.
//
// People sign in as the public client `lanyard-cli` (authorization code with PKCE on a
// loopback redirect, the device flow, refresh tokens with offline_access) through the
// provider's development login pages: any login name is an account whose e-mail is
// <login>@acme.example.
//
// Test-only routes beside the provider's own:
//   POST /__test/rotate   new signing keys (new kids); the old ones are no longer published
//   GET  /__test/stats    {"discovery": n, "jwks": n}: how often each was fetched
//   GET  /__test/github?audience=A
//                         GitHub Actions' token request (ACTIONS_ID_TOKEN_REQUEST_URL),
//                         answered for config.github.client_id when the bearer is
//                         config.github.request_token and A is the audience: {"value": token}
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const clientsById = new Map(config.clients.map((c) => [c.client_id, c]));
const stats = { discovery: 0, jwks: 0 };

async function makeKeys() {
  const keys = [];
  for (const alg of ['RS256', 'ES256']) {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
    const kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
    keys.push({
      alg,
      kid,
      jwk: { ...(await jose.exportJWK(privateKey)), kid, alg, use: 'sig' },
      private_pem: await jose.exportPKCS8(privateKey),
      public_pem: await jose.exportSPKI(publicKey),
    });
  }
  return keys;
}

function build(issuer, keys) {
  const provider = new Provider(issuer, {
    clients: [
      ...config.clients.map((c) => ({
        client_id: c.client_id,
        client_secret: c.client_secret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
      })),
      {
        client_id: 'lanyard-cli',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
      },
    ],
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, email: `${id}@acme.example`, email_verified: true }),
    }),
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    // The e-mail goes into the ID token (the broker reads only that).
    conformIdTokenClaims: false,
    ttl: { IdToken: config.id_token_ttl ?? 3600 },
    jwks: { keys: keys.map((k) => k.jwk) },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Only the client-credentials clients get access tokens for the broker; people's
        // sign-ins get the ID token the broker exchanges.
        defaultResource: (ctx, client) => (client.clientId === 'lanyard-cli' ? undefined : 'urn:lanyard:broker'),
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          const c = clientsById.get(client.clientId) ?? {};
          return {
            scope: 'lanyard',
            audience: config.audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: c.ttl ?? 300,
            jwt: { sign: { alg: c.alg ?? 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => clientsById.get(token.clientId)?.claims,
  });
  return provider.callback();
}

function writeKeys(keys) {
  const shown = keys.map(({ alg, kid, private_pem, public_pem }) => ({ alg, kid, private_pem, public_pem }));
  const tmp = `${config.keys_file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(shown), { mode: 0o600 });
  fs.renameSync(tmp, config.keys_file);
}

let issuer;
let handler;

// GitHub's shape around this provider's own client-credentials grant.
async function githubTokenRequest(req, res) {
  const github = config.github ?? {};
  const audience = new URL(req.url, issuer).searchParams.get('audience');
  if (!github.request_token || req.headers.authorization !== `Bearer ${github.request_token}`) {
    res.statusCode = 401;
    res.end('{"message":"bad request token"}');
    return;
  }
  if (audience !== config.audience) {
    res.statusCode = 400;
    res.end('{"message":"unknown audience"}');
    return;
  }
  const client = clientsById.get(github.client_id);
  const answer = await fetch(`${issuer}/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: client.client_id,
      client_secret: client.client_secret,
      resource: 'urn:lanyard:broker',
      scope: 'lanyard',
    }),
  });
  const body = await answer.json();
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ count: 1, value: body.access_token }));
}

const server = http.createServer(async (req, res) => {
  const path = req.url.split('?')[0];
  if (path === '/__test/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  if (path === '/__test/rotate' && req.method === 'POST') {
    const keys = await makeKeys();
    writeKeys(keys);
    handler = build(issuer, keys);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kids: keys.map((k) => k.kid) }));
    return;
  }
  if (path === '/__test/github') {
    await githubTokenRequest(req, res);
    return;
  }
  if (path === '/.well-known/openid-configuration') stats.discovery += 1;
  if (path === '/jwks') stats.jwks += 1;
  handler(req, res);
});

server.listen(config.port ?? 0, '127.0.0.1', async () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  const keys = await makeKeys();
  writeKeys(keys);
  handler = build(issuer, keys);
  process.stdout.write(`listening ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
