// A real OpenID provider for tests/oidc.rs: the certified `oidc-provider`
// package with its development login and consent pages, on 127.0.0.1 only.
//
//   node provider.mjs <dir with node_modules/oidc-provider> <redirect_uri> <client secret>
//
// Prints "READY <port>" once it listens (the port is picked by the kernel, so
// the issuer is known without a race), and exits when its stdin closes: the
// test holds the pipe, so a test killed on the way cannot leave it running.
//
// Clients: "gw-confidential" (client_secret_basic, ID tokens signed RS256,
// profile claims in the ID token) and "gw-public" (PKCE only, ES256, profile
// claims from userinfo alone, as strict providers do for the code flow).
// Accounts: any login at the dev form; alice, bob and carol have claims.

import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [prefix, redirectUri, secret] = process.argv.slice(2);
if (!prefix || !redirectUri || !secret) {
  console.error('usage: node provider.mjs <prefix> <redirect_uri> <client secret>');
  process.exit(2);
}
// ESM ignores NODE_PATH: the package is imported from where setup.sh put it.
const { default: Provider } = await import(
  pathToFileURL(join(prefix, 'node_modules', 'oidc-provider', 'lib', 'index.js')).href
);

const accounts = {
  alice: { preferred_username: 'alice', email: 'alice@example.test', airlock_role: 'approver' },
  bob: { preferred_username: 'bob', email: 'bob@example.test' },
  carol: { email: 'carol@example.test', airlock_role: ['ops', 'sec'] },
};

// Fresh keys each run: nothing secret is committed, and the RP must fetch them.
const key = (kind, options, kid, alg) => ({
  ...generateKeyPairSync(kind, options).privateKey.export({ format: 'jwk' }),
  kid,
  alg,
  use: 'sig',
});
const jwks = {
  keys: [
    key('rsa', { modulusLength: 2048 }, 'rsa-1', 'RS256'),
    key('ec', { namedCurve: 'P-256' }, 'ec-1', 'ES256'),
  ],
};

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [
      {
        client_id: 'gw-confidential',
        client_secret: secret,
        redirect_uris: [redirectUri],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'RS256',
      },
      {
        client_id: 'gw-public',
        redirect_uris: [redirectUri],
        token_endpoint_auth_method: 'none',
        id_token_signed_response_alg: 'ES256',
      },
    ],
    jwks,
    cookies: { keys: ['only-for-this-test-run'] },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'airlock_role'],
      email: ['email'],
    },
    // Scope claims in the ID token (as most providers do); gw-public's are
    // withheld below so that the userinfo path is exercised too.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    async findAccount(ctx, id) {
      const claims = accounts[id];
      if (!claims) return undefined;
      return {
        accountId: id,
        async claims(use) {
          if (use === 'id_token' && ctx.oidc?.client?.clientId === 'gw-public') return { sub: id };
          return { sub: id, ...claims };
        },
      };
    },
  });
  server.on('request', provider.callback());
  console.log(`READY ${port}`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
