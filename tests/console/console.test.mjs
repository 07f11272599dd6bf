// The web console end to end in headless Chromium (Debian's, driven by playwright-core),
// against the real `ferry serve --dev` with real clamd that tests/it/console.rs starts.
//
//   FERRY_URL=http://127.0.0.1:PORT SCREENSHOTS=DIR WORK=DIR node console.test.mjs
//
// Scenarios (issue 18): a service owner configures a resource (invalid values show the API's
// messages; a cross-site form post is refused); a sender sends 50 MB, reloads mid-upload and
// the upload resumes from its offset, then sees Published; a recipient downloads (bytes
// identical) and confirms, and the sender's page shows it; hostile file names are text; an
// outsider sees nothing; EICAR ends Failed with the reason; with OIDC_PROVIDER set, a person
// signs in through that OpenID Connect provider. A failing webhook endpoint's deliveries become
// dead letters on the resource's page and replay; a dropped network mid-upload resumes from
// the committed offset; Operations lists the failures each person may see. Screenshots of every page go to
// SCREENSHOTS. Exits non-zero on the first failure; never waits more than TIMEOUT in all.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const BASE = process.env.FERRY_URL;
const SHOTS = process.env.SCREENSHOTS;
const WORK = process.env.WORK;
const TIMEOUT_MS = 150_000;
assert.ok(BASE && SHOTS && WORK, 'FERRY_URL, SCREENSHOTS and WORK are required');
mkdirSync(SHOTS, { recursive: true });

const OWNER = '991825827';
const SENDER = '910753614';
const RECIPIENT = '986252932';
const OUTSIDER = '777777777';
const RESOURCE = 'console-test';

const started = Date.now();
const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${text}`);
const overall = setTimeout(() => {
  console.error(`the browser suite did not finish within ${TIMEOUT_MS / 1000} s`);
  process.exit(2);
}, TIMEOUT_MS);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  // playwright-core gives the browser a fresh temporary profile (--user-data-dir) itself.
});

// A person in their own browser profile (cookies, localStorage), failing on any dialog: an
// `alert` would mean a file name ran as script.
async function person(org, role) {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1200, height: 860 } });
  const page = await context.newPage();
  page.on('dialog', (d) => { throw new Error(`a dialog opened: ${d.message()}`); });
  page.on('pageerror', (e) => console.error(`page error (${org}): ${e.message}`));
  await page.goto(`${BASE}/`);
  assert.match(page.url(), /\/console\/signin$/, '/ leads to the sign-in page');
  await page.getByLabel('Organisation number').fill(org);
  await page.getByLabel(new RegExp(`^${role}`)).check();
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForLoadState();
  assert.equal(await page.locator('#who').textContent().then((t) => t.includes(org)), true);
  return { context, page };
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

try {
  // --- the service owner ---
  step('service owner signs in, registers, creates a resource');
  const owner = await person(OWNER, 'Service owner');
  let page = owner.page;
  assert.match(page.url(), /\/console\/resources$/);
  await page.getByLabel('Name of the service owner').fill('Console test owner');
  await page.getByRole('button', { name: 'Register' }).click();
  await page.getByRole('link', { name: 'New resource' }).click();
  await page.getByLabel('Resource id').fill(RESOURCE);
  await page.getByLabel(/^Time to live/).fill('P400D');
  await page.getByLabel(/^Who may send/).fill(SENDER);
  await page.getByLabel(/^Who may receive/).fill(`${RECIPIENT}, ${OWNER}`);
  await page.getByRole('button', { name: 'Save' }).click();
  // The API's own message, beside the field.
  const ttlError = await page.locator('#ttl-error').textContent();
  assert.match(ttlError, /365/, `the time-to-live rule's message: ${ttlError}`);
  assert.equal(await page.getByLabel(/^Time to live/).getAttribute('aria-invalid'), 'true');
  await shot(page, 'resource-form-errors');
  await page.getByLabel(/^Time to live/).fill('P30D');
  await page.getByLabel(/^Largest file/).fill('-5');
  await page.getByRole('button', { name: 'Save' }).click();
  const sizeError = await page.locator('#max_size-error').textContent();
  assert.ok(sizeError.length > 5, `the size rule's message: ${sizeError}`);
  await page.getByLabel(/^Largest file/).fill('');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.waitForURL(/\/console\/resources$/);
  assert.equal(await page.locator('#resources').getByRole('link', { name: RESOURCE }).count(), 1);
  await shot(page, 'resources');
  // Edit: the values come back, a change is saved.
  await page.locator('#resources').getByRole('link', { name: RESOURCE }).click();
  assert.equal(await page.getByLabel(/^Time to live/).inputValue(), 'P30D');
  await page.getByLabel(/^Largest file/).fill('100000000');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.waitForURL(/\/console\/resources$/);
  assert.match(await page.locator('#resources').textContent(), /95\.4 MiB/);

  step('webhook subscriptions on the resource');
  // The endpoint answers the validation handshake, then fails every event until `hooksOk`.
  let hooksOk = false;
  const delivered = [];
  const hooks = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const event = JSON.parse(body || '{}');
      const validation = event.type === 'platform.events.validatesubscription';
      if (!validation && hooksOk) delivered.push(event);
      res.statusCode = validation || hooksOk ? 200 : 500;
      res.end();
    });
  });
  await new Promise((resolve) => hooks.listen(0, '127.0.0.1', resolve));
  const endPoint = `http://127.0.0.1:${hooks.address().port}/hook`;
  // The subscription API with the session's own token, as the Send page gets it.
  const ownerToken = await page.evaluate(async () => {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const r = await fetch('/console/api/token', { method: 'POST', headers: { 'X-CSRF-Token': csrf } });
    return (await r.json()).token;
  });
  const created = await page.request.post(`${BASE}/events/api/v1/subscriptions`, {
    headers: { Authorization: `Bearer ${ownerToken}` },
    data: { endPoint, resourceFilter: `urn:altinn:resource:${RESOURCE}` },
  });
  assert.equal(created.status(), 201, await created.text());
  const subscriptionId = (await created.json()).id;
  for (let i = 0; ; i += 1) {
    await page.goto(`${BASE}/console/resources/edit?id=${RESOURCE}`);
    const row = page.locator('#subscription-list tr', { hasText: endPoint });
    if ((await row.textContent()).includes('Delivering')) break;
    assert.ok(i < 40, 'the endpoint was validated');
    await page.waitForTimeout(250);
  }
  await page.getByRole('button', { name: 'Replay dead letters' }).click();
  assert.match(await page.locator('#replayed').textContent(), /^0 dead letter/);
  await shot(page, 'resource-edit');

  step('a cross-site form post is refused');
  // Another origin (same host, another port: same-site, so the Lax cookie goes along and only
  // the origin check stands between it and the change).
  const evil = createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(`<form id="f" method="post" action="${BASE}/console/resources/edit">
      <input name="id" value="${RESOURCE}"><input name="ttl" value="P1D">
      <input name="senders" value="${OUTSIDER}"></form>
      <script>document.getElementById('f').submit()</script>`);
  });
  await new Promise((resolve) => evil.listen(0, '127.0.0.1', resolve));
  const attack = await owner.context.newPage();
  const [answer] = await Promise.all([
    attack.waitForResponse((r) => r.url().endsWith('/console/resources/edit')),
    attack.goto(`http://127.0.0.1:${evil.address().port}/`),
  ]);
  assert.equal(answer.status(), 403, 'the cross-site post is refused');
  await attack.close();
  evil.close();
  await page.goto(`${BASE}/console/resources/edit?id=${RESOURCE}`);
  assert.equal(await page.getByLabel(/^Who may send/).inputValue(), `0192:${SENDER}`, 'unchanged');

  // --- the sender: 50 MB, reloaded mid-upload ---
  step('sender sends 50 MB and reloads mid-upload');
  const big = join(WORK, 'big.bin');
  const bytes = Buffer.alloc(50_000_000);
  for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(big, bytes);
  const bigHash = createHash('sha256').update(bytes).digest('hex');
  const sender = await person(SENDER, 'Sender');
  page = sender.page;
  assert.match(page.url(), /\/console\/send$/);
  // Each chunk is held back a little, so the reload lands mid-upload on any machine.
  await page.route('**/upload/tus/**', async (route) => {
    if (route.request().method() === 'PATCH') await new Promise((r) => setTimeout(r, 250));
    await route.continue();
  });
  const patchOffsets = [];
  page.on('request', (r) => {
    if (r.method() === 'PATCH') patchOffsets.push(Number(r.headers()['upload-offset']));
  });
  const fill = async () => {
    await page.getByLabel('Resource').selectOption(RESOURCE);
    await page.getByLabel('Recipients').fill(RECIPIENT);
    await page.getByLabel('File').setInputFiles(big);
  };
  await fill();
  await page.getByRole('button', { name: 'Send' }).click();
  await page.waitForFunction(() => document.getElementById('progress').value >= 25, null, { timeout: 30_000 });
  await shot(page, 'send-uploading');
  const beforeReload = patchOffsets.length;
  await page.reload();
  await fill();
  await page.getByRole('button', { name: 'Send' }).click();
  await page.waitForFunction(() => document.getElementById('upload').dataset.resumedAt, null, { timeout: 20_000 });
  const resumedAt = Number(await page.locator('#upload').getAttribute('data-resumed-at'));
  assert.ok(resumedAt > 0, `resumed from the committed offset, not 0 (${resumedAt})`);
  await page.waitForFunction(() => document.getElementById('progress').value === 100, null, { timeout: 60_000 });
  const afterReload = patchOffsets.slice(beforeReload);
  assert.ok(afterReload.length > 0 && afterReload[0] === resumedAt,
    `the first PATCH after the reload starts at ${resumedAt}: ${afterReload}`);
  assert.ok(!afterReload.includes(0), 'nothing was sent again from zero');
  await page.unroute('**/upload/tus/**');
  await page.locator('#status', { hasText: 'Published' }).waitFor({ timeout: 60_000 });
  const bigId = await page.locator('#transfer-link').textContent();
  await shot(page, 'send');
  step(`published ${bigId} (resumed at ${resumedAt} bytes)`);

  // Hostile names, sent from a second tab.
  step('hostile file names and EICAR');
  const hostile = '<script>alert(1)</script>"onmouseover=alert(2) x=".txt';
  const tab = await sender.context.newPage();
  tab.on('dialog', (d) => { throw new Error(`a dialog opened: ${d.message()}`); });
  const sendSmall = async (name, content, recipients = RECIPIENT) => {
    await tab.goto(`${BASE}/console/send`);
    await tab.getByLabel('Resource').selectOption(RESOURCE);
    await tab.getByLabel('Recipients').fill(recipients);
    await tab.getByLabel('File').setInputFiles({ name, mimeType: 'text/plain', buffer: Buffer.from(content) });
    await tab.getByRole('button', { name: 'Send' }).click();
    await tab.locator('#status', { hasText: /Published|Failed/ }).waitFor({ timeout: 60_000 });
    return tab.locator('#status').textContent();
  };
  // To the service owner too: its subscription's endpoint is sent the Published event.
  assert.equal(await sendSmall(hostile, 'harmless', `${RECIPIENT} ${OWNER}`), 'Published');
  assert.equal(await tab.locator('#upload-name').textContent(), hostile);
  const eicar = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
  assert.equal(await sendSmall('eicar.com', eicar), 'Failed');
  const reason = await tab.locator('#status-text').textContent();
  assert.match(reason, /Eicar/i, `the reason names the signature: ${reason}`);
  await shot(tab, 'send-eicar-failed');

  // --- the network drops mid-upload ---
  step('the network drops mid-upload and comes back');
  const roaming = await person(SENDER, 'Sender');
  const net = roaming.page;
  const netFile = join(WORK, 'network.bin');
  const netBytes = Buffer.alloc(30_000_000);
  for (let i = 0; i < netBytes.length; i += 4) netBytes.writeUInt32LE((i * 40503 + 7) >>> 0, i);
  writeFileSync(netFile, netBytes);
  await net.route('**/upload/tus/**', async (route) => {
    if (route.request().method() === 'PATCH') await new Promise((r) => setTimeout(r, 250));
    // Offline by now, the request fails in the browser: nothing to continue.
    await route.continue().catch(() => {});
  });
  const netOffsets = [];
  net.on('request', (r) => {
    if (r.method() === 'PATCH') netOffsets.push(Number(r.headers()['upload-offset']));
  });
  await net.getByLabel('Resource').selectOption(RESOURCE);
  await net.getByLabel('Recipients').fill(RECIPIENT);
  await net.getByLabel('File').setInputFiles(netFile);
  await net.getByRole('button', { name: 'Send' }).click();
  await net.waitForFunction(() => document.getElementById('progress').value >= 20, null, { timeout: 30_000 });
  await roaming.context.setOffline(true);
  await net.locator('#progress-text', { hasText: 'Offline' }).waitFor({ timeout: 20_000 });
  await shot(net, 'send-offline');
  const beforeOnline = netOffsets.length;
  await net.waitForTimeout(1000);
  await roaming.context.setOffline(false);
  await net.waitForFunction(() => document.getElementById('upload').dataset.resumedAt, null, { timeout: 20_000 });
  const netResumedAt = Number(await net.locator('#upload').getAttribute('data-resumed-at'));
  assert.ok(netResumedAt > 0, `resumed from the committed offset, not 0 (${netResumedAt})`);
  await net.waitForFunction(() => document.getElementById('progress').value === 100, null, { timeout: 60_000 });
  const afterOnline = netOffsets.slice(beforeOnline);
  assert.ok(afterOnline.length > 0 && afterOnline[0] === netResumedAt,
    `the first PATCH back online starts at ${netResumedAt}: ${afterOnline}`);
  assert.ok(!afterOnline.includes(0), 'nothing was sent again from zero');
  await net.unroute('**/upload/tus/**');
  await net.locator('#status', { hasText: 'Published' }).waitFor({ timeout: 60_000 });
  step(`published after the network came back (resumed at ${netResumedAt} bytes)`);
  await roaming.context.close();

  // --- deliveries and dead letters of the owner's subscription ---
  step('a failing endpoint: dead letters on the resource page, then replay');
  page = owner.page;
  const deadRows = page.locator(`#dead-${subscriptionId} tbody tr`);
  for (let i = 0; ; i += 1) {
    await page.goto(`${BASE}/console/resources/edit?id=${RESOURCE}`);
    if (await deadRows.count() > 0) break;
    assert.ok(i < 60, 'the failing delivery became a dead letter');
    await page.waitForTimeout(250);
  }
  const dead = await deadRows.first().textContent();
  assert.match(dead, /no\.altinn\.broker\.published/, dead);
  assert.match(dead, /HTTP 500/, dead);
  assert.match(dead, /500/, 'the endpoint\'s response code');
  // The subscription API shows the same, to its owner.
  const listed = await page.request.get(`${BASE}/events/api/v1/subscriptions/${subscriptionId}/deliveries`, {
    headers: { Authorization: `Bearer ${ownerToken}` },
  });
  assert.equal(listed.status(), 200);
  const listedBody = await listed.json();
  assert.equal(listedBody.deadLetters[0].responseCode, 500, JSON.stringify(listedBody));
  assert.equal(listedBody.deadLetters[0].attempts, 2, 'the first attempt and the one retry');
  await shot(page, 'resource-deliveries');
  hooksOk = true;
  await page.getByRole('button', { name: 'Replay dead letters' }).click();
  assert.match(await page.locator('#replayed').textContent(), /^1 dead letter/);
  for (let i = 0; delivered.length === 0; i += 1) {
    assert.ok(i < 80, 'the replayed event was delivered');
    await page.waitForTimeout(250);
  }
  assert.equal(delivered[0].type, 'no.altinn.broker.published');
  // Delivered: it leaves the list once the server recorded the endpoint's answer.
  for (let i = 0; ; i += 1) {
    await page.goto(`${BASE}/console/resources/edit?id=${RESOURCE}`);
    const counts = await page.locator(`#deliveries-${subscriptionId}`).textContent();
    if (/0 pending, 0 dead letter/.test(counts)) break;
    assert.ok(i < 40, `the replayed delivery left the list: ${counts}`);
    await page.waitForTimeout(250);
  }
  assert.equal(await deadRows.count(), 0, 'no dead letters after the replay was delivered');
  hooks.close();

  // --- the recipient ---
  step('recipient downloads and confirms');
  const recipient = await person(RECIPIENT, 'Recipient');
  page = recipient.page;
  assert.match(page.url(), /\/console\/inbox$/);
  const table = page.locator('#transfers');
  await table.getByRole('link', { name: 'big.bin' }).waitFor();
  // The hostile name is text: shown literally, no element or handler made of it.
  assert.equal(await table.getByRole('link', { name: hostile }).count(), 1);
  assert.equal(await page.locator('[onmouseover]').count(), 0);
  assert.equal(await page.locator('script').count(), 2, 'only the console\'s own scripts');
  await shot(page, 'inbox');
  await page.setViewportSize({ width: 390, height: 800 });
  await shot(page, 'inbox-phone');
  await page.setViewportSize({ width: 1200, height: 860 });
  // Filters: Failed shows the EICAR transfer only.
  await page.getByLabel('Status').selectOption('Failed');
  await page.getByRole('button', { name: 'Filter' }).click();
  assert.equal(await table.locator('tbody tr').count(), 1);
  assert.equal(await table.getByRole('link', { name: 'eicar.com' }).count(), 1);
  await page.goto(`${BASE}/console/inbox`);
  await table.getByRole('link', { name: 'big.bin' }).click();
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'Download' }).click(),
  ]);
  const saved = join(WORK, 'downloaded.bin');
  await download.saveAs(saved);
  assert.equal(createHash('sha256').update(readFileSync(saved)).digest('hex'), bigHash,
    'the downloaded bytes are the sent bytes');
  // A ranged request through the same route.
  const ranged = await page.request.get(`${BASE}/console/transfers/${bigId}/download`, {
    headers: { Range: 'bytes=1000-1999' },
  });
  assert.equal(ranged.status(), 206);
  assert.deepEqual(Buffer.from(await ranged.body()), bytes.subarray(1000, 2000));
  await page.getByRole('button', { name: 'Confirm download' }).click();
  await page.locator('#my-status', { hasText: 'Confirmed' }).waitFor();
  await shot(page, 'transfer');
  // The sender's page, still open, follows to the confirmation.
  await sender.page.locator('#recipient-statuses li[data-status="DownloadConfirmed"]').waitFor({ timeout: 30_000 });
  await sender.page.locator('#status', { hasText: 'AllConfirmedDownloaded' }).waitFor({ timeout: 30_000 });
  step('the sender saw the confirmation');

  // --- an outsider ---
  step('an outsider sees nothing');
  const outsider = await person(OUTSIDER, 'Recipient');
  page = outsider.page;
  assert.equal(await page.locator('#transfers').count(), 0);
  const response = await page.goto(`${BASE}/console/transfers/${bigId}`);
  assert.equal(response.status(), 404, 'another party\'s transfer is not found');
  const file = await page.request.get(`${BASE}/console/transfers/${bigId}/download`);
  assert.equal(file.status(), 404);
  // Without a session: the sign-in page, never data.
  const anonymous = await browser.newContext();
  const anon = await anonymous.newPage();
  await anon.goto(`${BASE}/console/transfers/${bigId}`);
  assert.match(anon.url(), /\/console\/signin$/);
  await shot(anon, 'signin');
  // The APIs stay bearer-only: the session cookie does not open them.
  const api = await recipient.page.request.get(`${BASE}/broker/api/v1/filetransfer/${bigId}`);
  assert.equal(api.status(), 401);

  // --- operations ---
  step('operations');
  await owner.page.goto(`${BASE}/console/operations`);
  assert.match(await owner.page.locator('#clamd').textContent(), /ClamAV/);
  assert.match(await owner.page.locator('#counts').textContent(), /Failed\s*1/);
  // The EICAR transfer on the owner's resource: who sent it and why it failed, not its name.
  const ownerFailures = await owner.page.locator('#failures').textContent();
  assert.match(ownerFailures, /Eicar/i, ownerFailures);
  assert.match(ownerFailures, new RegExp(`0192:${SENDER}`));
  assert.ok(!ownerFailures.includes('eicar.com'), 'the service owner is not shown the file name');
  await shot(owner.page, 'operations');
  // The sender sees its own failure, with the file's name linking to the transfer.
  await sender.page.goto(`${BASE}/console/operations`);
  await sender.page.locator('#failures').getByRole('link', { name: 'eicar.com' }).waitFor();
  // An outsider sees no one's failures (a recipient's role sees none at all).
  await outsider.page.goto(`${BASE}/console/operations`);
  assert.equal(await outsider.page.locator('#failures').count(), 0);
  assert.match(await outsider.page.locator('#failures-note').textContent(), /senders .* service owners/);
  const headers = (await owner.page.request.get(`${BASE}/console/operations`)).headers();
  assert.match(headers['content-security-policy'], /script-src 'self'/);
  assert.match(headers['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(headers['x-content-type-options'], 'nosniff');

  // --- production sign-in: OpenID Connect (code flow + PKCE) against a real provider ---
  if (process.env.OIDC_PROVIDER) {
    step('OpenID Connect sign-in');
    const context = await browser.newContext();
    const oidc = await context.newPage();
    await oidc.goto(`${BASE}/console/signin`);
    await oidc.getByRole('link', { name: 'Sign in with the test provider' }).click();
    // The provider's own login and consent pages.
    await oidc.waitForURL((url) => url.origin === process.env.OIDC_PROVIDER);
    await oidc.locator('input[name="login"]').fill(SENDER);
    await oidc.locator('input[name="password"]').fill('any');
    await oidc.locator('button[type="submit"]').click();
    await oidc.locator('button[type="submit"]').click();
    await oidc.waitForURL(`${BASE}/console/send`);
    assert.match(await oidc.locator('#who').textContent(), new RegExp(`0192:${SENDER} · Sender`));
    // The session acts for the organisation in the provider's claims: the sender's resource.
    assert.equal(await oidc.getByLabel('Resource').inputValue(), RESOURCE);
    await oidc.goto(`${BASE}/console/transfers/${bigId}`);
    assert.equal(await oidc.locator('#file-name').textContent(), 'big.bin');
  }

  step('all console scenarios passed');
} finally {
  clearTimeout(overall);
  await browser.close();
}
