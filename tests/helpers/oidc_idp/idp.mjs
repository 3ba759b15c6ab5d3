// A tiny OpenID Connect provider for imex's single sign-on tests: the certified oidc-provider package, on
// loopback only, configured from the environment (tests/helpers/oidctools.py starts it):
//   IDP_PORT      port to listen on (127.0.0.1)
//   IDP_ISSUER    its issuer, e.g. http://localhost:PORT
//   IDP_CLIENTS   JSON list of clients: client_id, client_secret, redirect_uris, post_logout_redirect_uris
//   IDP_ACCOUNTS  a JSON file { "login name": { claims... } }, read again at every sign-in, so a test can
//                 change someone's claims between two sign-ins
// The ID token carries every claim of the account whose scope was granted (openid brings org_code and
// roles); PKCE (S256) is required. The sign-in and sign-out pages are its own, with no outside resource.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { Provider } from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
const issuer = process.env.IDP_ISSUER;
const clients = JSON.parse(process.env.IDP_CLIENTS);
const accountsFile = process.env.IDP_ACCOUNTS;

const accounts = () => JSON.parse(readFileSync(accountsFile, 'utf8'));
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'test-idp-key' };

const provider = new Provider(issuer, {
  clients: clients.map((c) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  jwks: { keys: [jwk] },
  cookies: { keys: ['imex-test-idp-cookie-key'] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub', 'org_code', 'roles'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
  },
  conformIdTokenClaims: false, // the ID token carries the granted claims, not only the userinfo endpoint
  features: {
    devInteractions: { enabled: false }, // its pages load fonts from the internet: ours are below
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = page('Sign out', `${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page('Signed out', '<p>You are signed out.</p>');
      },
    },
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre id="error">${esc(JSON.stringify(out))}</pre>`);
  },
  findAccount: async (ctx, sub) => {
    const claims = accounts()[sub];
    if (!claims) return undefined;
    return { accountId: sub, claims: async () => ({ ...claims, sub }) };
  },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, IdToken: 300, AccessToken: 300, AuthorizationCode: 60 },
});
provider.proxy = false;

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// the interactions: a sign-in form that takes a login name known to IDP_ACCOUNTS; consent is given at once
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (req.method === 'POST') {
      const login = (await readForm(req)).get('login') || '';
      if (accounts()[login]) {
        await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
        return;
      }
    }
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(page('Test IdP sign-in', `<form method="post" action="/interaction/${esc(uid)}">
<label>Login <input name="login" autofocus></label> <button type="submit">Sign in</button></form>`));
    return;
  }
  // consent: grant what is asked for
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const handler = provider.callback();
const server = createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.statusCode = 400;
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(page('Interaction failed', `<pre id="error">${esc(err.message)}</pre>`));
    });
    return;
  }
  handler(req, res);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`test IdP ${issuer} listening on 127.0.0.1:${port}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
