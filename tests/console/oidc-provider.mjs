// A real OpenID Connect provider for the console's production sign-in test: oidc-provider
// (node-oidc-provider, a certified implementation) on loopback, with one confidential client
// (Ferry's console; PKCE required) and accounts whose ID tokens carry the organisation and
// scopes in Altinn's claims, as a provider configured for Ferry would. Its development
// interactions (a login form taking any account name, then consent) stand in for a real
// login page.
//
//   node oidc-provider.mjs PORT FERRY_URL      (prints "ready" once it listens)

import Provider from 'oidc-provider';

const [port, ferry] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'ferry-console',
    client_secret: 'console-test-secret',
    redirect_uris: [`${ferry}/console/oidc/callback`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'altinn'],
  claims: { openid: ['sub'], altinn: ['urn:altinn:orgNumber', 'urn:altinn:scope'] },
  // The claims go into the ID token itself (Ferry reads them there, as from a bearer token).
  conformIdTokenClaims: false,
  // The account name typed at login is the organisation number it acts for; a sender.
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({
      sub: id,
      'urn:altinn:orgNumber': id,
      'urn:altinn:scope': 'altinn:broker.write altinn:broker.read',
    }),
  }),
  features: { devInteractions: { enabled: true } },
});
provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
