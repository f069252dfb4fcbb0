// A CA of the test's own, made with openssl: a certificate for the engine
// (127.0.0.1 and localhost, nothing else, so a host-name check can fail),
// one for a client, and an unrelated CA that signed neither.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import type { EngineTlsFiles } from './engine.js';

export interface TestCa extends EngineTlsFiles {
  /** A client certificate and key that the CA signed. */
  clientCert: string;
  clientKey: string;
  /** A CA that signed nothing here. */
  otherCa: string;
}

const openssl = (args: string[]): void => {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
};

function signed(
  dir: string,
  name: string,
  ca: { cert: string; key: string },
  ext: string,
): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  writeFileSync(extFile, `${ext}\n`);
  openssl(
    ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'].concat([
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      `/CN=${name}`,
    ]),
  );
  openssl(
    ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2'].concat([
      '-out',
      cert,
      '-extfile',
      extFile,
    ]),
  );
  return { cert, key };
}

/** Makes the CA and its certificates in `dir` (the engine must be able to read them). */
export function makeTestCa(dir: string): TestCa {
  const ca = { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
  const mkCa = (c: { cert: string; key: string }, cn: string): void =>
    openssl(
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2'].concat([
        '-keyout',
        c.key,
        '-out',
        c.cert,
        '-subj',
        `/CN=${cn}`,
      ]),
    );
  mkCa(ca, 'poprelay test CA');
  const other = { cert: join(dir, 'other-ca.crt'), key: join(dir, 'other-ca.key') };
  mkCa(other, 'another CA');
  const server = signed(dir, 'engine', ca, 'subjectAltName=IP:127.0.0.1,DNS:localhost');
  const client = signed(dir, 'client', ca, 'extendedKeyUsage=clientAuth');
  return {
    ca: ca.cert,
    cert: server.cert,
    key: server.key,
    clientCert: client.cert,
    clientKey: client.key,
    otherCa: other.cert,
  };
}
